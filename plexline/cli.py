"""`plexline`: one command, a subcommand per role. Heavy imports happen inside each subcommand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plexline.logs import setup_logging

DEFAULT_CACHE = Path.home() / ".cache" / "plexline"


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def add_model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="dummy",
                        help="dummy (random weights: tiny on CPU, full size on CUDA), dummy:tiny, dummy:full, "
                             "local:DIR (a folder with the released files) or hf[:REPO] (HF_TOKEN)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where voice prompts made from WAV files are kept")


def load_models(args: argparse.Namespace):
    from agent.model.hub import ModelFilesError
    from agent.model.loading import ModelSpecError, load_models as load
    try:
        return load(args.model, args.device)
    except (ModelFilesError, ModelSpecError) as error:
        raise CommandError(str(error)) from error


def offline(args: argparse.Namespace) -> None:
    from agent.audio_file import AudioFileError
    from agent.engine.prefix import PromptTooLong
    from agent.offline import run_offline
    from personas.loader import PersonaError
    from voices.catalog import VoiceError

    for path, what in ((args.persona, "persona"), (args.input, "input")):
        if not path.is_file():
            raise CommandError(f"{path}: no such {what} file")
    models = load_models(args)
    voices_dir = args.voices_dir or args.persona.parent / "voices"
    try:
        result = run_offline(models, args.persona, args.input, args.output, args.transcript, voices_dir,
                             args.cache_dir, seed=args.seed, progress=not args.quiet)
    except (AudioFileError, PersonaError, VoiceError, PromptTooLong) as error:
        raise CommandError(str(error)) from error
    note = " -- DUMMY MODEL, RANDOM WEIGHTS: the audio is noise" if models.dummy else ""
    print(f"wrote {args.output} ({result.seconds:.1f} s, {result.words} words){note}")


def bench_engine(args: argparse.Namespace) -> None:
    from agent.engine.bench import bench_engine as run, table, write_json

    models = load_models(args)
    if models.device.type != "cuda":
        raise CommandError("the engine benchmark needs a CUDA device")
    result = run(models, args.batches, args.steps, args.warmup)
    write_json(result, args.json)
    print(table(result))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plexline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logs")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("offline", help="run a WAV of a caller through the model, write the agent's audio")
    p.add_argument("--persona", type=Path, required=True, help="a persona YAML file")
    p.add_argument("--input", type=Path, required=True, help="the caller's audio (any rate, mono or stereo)")
    p.add_argument("--output", type=Path, required=True, help="the agent's audio (24 kHz WAV, same duration)")
    p.add_argument("--transcript", type=Path, default=None, help="the agent's words with times (JSON)")
    p.add_argument("--voices-dir", type=Path, default=None,
                   help="folder of the persona's voice files (default: voices/ beside the persona)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the persona's, else 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_flag(p)
    p.set_defaults(run=offline)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("engine", help="whole-frame latency per batch size, time to ready (GPU)")
    p.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8, 16, 24, 32, 40, 48])
    p.add_argument("--steps", type=int, default=500, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--json", type=Path, default=Path("bench-engine.json"))
    add_model_flag(p)
    p.set_defaults(run=bench_engine, model="dummy:full")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        args.run(args)
    except CommandError as error:
        print(f"plexline: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
