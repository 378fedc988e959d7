// A test call from the page: the dialer's WHIP exchange (telephony/control/static/dialer.html), the
// microphone out, the agent's audio in, and the call's data channel (its "call", "state", "text" and
// "ended" messages, agent.media.call_channel) told to `onMessage`.
import { api, detail, headers } from "./api.js";

export class TestCall {
  constructor(whipPath, onMessage, onState) {
    this.whipPath = whipPath;
    this.onMessage = onMessage;
    this.onState = onState;
    this.state = "idle";
    this.pc = this.mic = this.session = null;
    this.callId = null;
    this.messages = [];
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }

  async start(audio) {
    this.messages = [];
    this.setState("calling");
    try {
      this.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      return this.setState(`failed: no microphone (${error.name})`);
    }
    const pc = this.pc = new RTCPeerConnection();
    this.mic.getTracks().forEach((track) => pc.addTrack(track, this.mic));
    const channel = pc.createDataChannel("call");
    channel.onmessage = (event) => this.message(JSON.parse(event.data));
    pc.ontrack = (event) => { audio.srcObject = event.streams[0] || new MediaStream([event.track]); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && this.pc === pc) this.finish("failed: the connection was lost");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 3000);
    const response = await api(this.whipPath, {
      method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
    if (response.status !== 201) return this.finish(`refused: ${response.status} ${await detail(response)}`);
    this.session = response.headers.get("Location");
    this.setState("connecting");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  }

  message(message) {
    this.messages.push(message);
    if (message.type === "call") this.callId = message.call_id;
    if (message.type === "state") this.setState(message.state);
    this.onMessage(message);
    if (message.type === "ended") this.finish(`ended: ${message.reason}`);
  }

  async hangUp() {
    const session = this.session;
    this.setState("hanging up");
    if (session) await fetch(session, { method: "DELETE", headers: headers() }).catch(() => {});
    if (!this.state.startsWith("ended")) this.finish("ended: you hung up");
  }

  finish(state) {
    if (this.pc) this.pc.close();
    if (this.mic) this.mic.getTracks().forEach((track) => track.stop());
    this.pc = this.mic = this.session = null;
    this.setState(state);
  }

  get live() {
    return !["idle", "ended", "failed", "refused"].some((s) => this.state.startsWith(s));
  }
}

function gathered(pc, timeoutMs) {
  // WHIP without trickle: the offer goes out with its candidates.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, timeoutMs);
  });
}
