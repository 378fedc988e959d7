"""The audio every call is carried in between a media leg and the engine, defined once."""

SAMPLE_RATE = 24_000  # Hz: Mimi's rate, and the rate of every caller and agent frame on a worker
FRAME_SIZE = 1920  # samples: one 80 ms frame at 24 kHz, one model step
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE  # 0.08
