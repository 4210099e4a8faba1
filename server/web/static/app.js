// The lipstream kiosk page: one WebSocket session (protocol: lipstream/server/web/protocol.py), audio played
// through the Web Audio API at each chunk's start_sample, frames drawn on a canvas at each frame's pts, both on
// one mapping from the session's media clock to the AudioContext clock.
//
// Query parameters: voice, speaker, avatar, engine (auto|wav2lip|viseme), fps, length_scale, pacing
// (realtime|fast; realtime sends idle frames while silent), lead (ms of buffering, 0..5000, default 250),
// kiosk=1 (only the avatar, full screen), token (passed on to the WebSocket when the server needs one),
// channel (a name: another process makes this page speak with POST /v1/channels/NAME/say, channels.py).
// Outside kiosk=1 the voice (and speaker) and avatar pickers, filled from GET /v1/audio/voices and
// GET /v1/avatars, set those parameters in the address and reconnect with them.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const LEAD_MS = Number(params.get("lead") || 250);
  // A lead that is not a number of milliseconds would schedule nothing (NaN) or in the past: refused below.
  const BAD_LEAD = Number.isFinite(LEAD_MS) && LEAD_MS >= 0 && LEAD_MS <= 5000 ? null
    : `lead ${JSON.stringify(params.get("lead"))} is not a buffering time: use 0..5000 (ms; default 250)`;
  const LEAD_S = BAD_LEAD ? 0.25 : LEAD_MS / 1000;
  const MAX_LEAD_S = 1.0;        // the lead grows by LEAD_STEP_S at each underrun in speech, up to this
  const LEAD_STEP_S = 0.1;
  const MIN_AHEAD_S = 0.02;      // a chunk due sooner than this is late: the clock mapping moves forward
  const TRIM_S = 0.15;           // silence queued more than LEAD_S + TRIM_S ahead is dropped (latency trim)
  const DECODE_AHEAD_S = 0.5;    // JPEGs are decoded this far ahead of their presentation time
  const MAX_BACKOFF_S = 5;
  const MAX_DECODES = 16;        // JPEG loads in flight at once
  const STALL_MS = 100;          // a gap between animation frames longer than this is a stall of the browser
  const DECODER = params.get("decoder") === "bitmap" ? "bitmap" : "img";

  // The media clock -> AudioContext clock mapping: media time m plays at context time t0 + m.
  let t0 = null;
  let lead = LEAD_S;               // seconds between a chunk's arrival and its playing, when anchoring
  let ctx = null;
  let ws = null;
  let backoffS = 0.25;
  let retryTimer = null;           // the pending reconnect after a close
  let refused = false;             // the server refused this connection's config
  let textRefused = null;          // the server refused a text (its session ended): the page reconnects
  let sessionEnded = false;        // the server ended this connection's session itself (stats: --idle-timeout)
  let audioChain = Promise.resolve();
  let epoch = 0;                   // bumped by stop and by reconnects: work started before is dropped
  let sources = [];                // {node, start, end, utterance, media}: context seconds, media seconds
  let frames = [];                 // {pts, index, utterance, blob, image, decoding} sorted by pts
  let shown = null;                // the frame on the canvas
  let patchMode = false;           // the frames are face_patch patches and repeats: each one is drawn in order
  let words = [];                  // {utterance, word, start, end}: media seconds, from the word events
  let subtitleKey = "";            // what the subtitle shows now (utterance and word), to touch the DOM once
  let dropThrough = 0;             // utterance ids <= this are interrupted: their media is dropped
  let awaitingInterruptAck = false;
  const droppedUtterances = new Set();
  const utteranceStart = new Map(); // utterance id -> media seconds of its first sample
  let maxUtteranceSeen = 0;
  let speakAt = null;
  let drawTimes = [];
  let decodesInFlight = 0;
  let decodingSpeech = 0;          // speech chunks of this epoch received, not yet scheduled (decoding)
  let lastRafAt = null;
  let rafGapMs = 0;                // since the previous animation frame: a large one means the page stalled

  const state = {
    connected: false, connections: 0, sessionId: null, sampleRate: 0, fps: 0, engine: "", error: null,
    audioStartedAt: null, lastAudioEndedAt: null, scheduledSeconds: 0, playedSeconds: 0, chunksReceived: 0,
    chunksScheduled: 0, reanchors: 0, trims: 0, underruns: 0, leadMs: LEAD_S * 1000, utteranceAudio: {},
    framesReceived: 0, framesDrawn: 0, speakingFramesDrawn: 0, patchesDrawn: 0, repeatsDrawn: 0,
    shownPts: null, shownUtterance: null, lastOffsetMs: null, maxOffsetMs: 0, offsetSamples: 0,
    maxSpeechOffsetMs: 0, speechOffsetSamples: 0, worstSpeechOffset: null,
    stalledTicks: 0, longestStallMs: 0, maxStalledOffsetMs: 0, lateFrameTicks: 0, maxLateFrameOffsetMs: 0,
    timeToFirstAudioMs: null, interrupted: 0, gaveUp: false, utterances: [], stats: null, warnings: [],
    wordsReceived: 0, subtitle: "", subtitleWord: "",
    voice: "", speaker: "", avatar: "", pickersError: null,  // the session's resolved choice; listing failures
  };

  const $ = (id) => document.getElementById(id);
  const canvas = $("avatar");
  const g = canvas.getContext("2d");
  const KIOSK = params.get("kiosk") === "1";
  if (KIOSK) document.body.classList.add("kiosk");

  function audioContext() {
    if (ctx === null) ctx = new AudioContext({ latencyHint: "interactive" });
    return ctx;
  }

  // The context time of the sample leaving the speakers now (what the listener hears).
  function heardTime() {
    const c = audioContext();
    if (typeof c.getOutputTimestamp === "function") {
      const ts = c.getOutputTimestamp();
      if (ts.contextTime > 0 && ts.performanceTime > 0) {
        return ts.contextTime + (performance.now() - ts.performanceTime) / 1000;
      }
    }
    return c.currentTime - (c.outputLatency || c.baseLatency || 0);
  }

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = kind || "";
  }

  // ---- connection -------------------------------------------------------------------------------------
  function config() {
    // face_patch: the mouth's region only and repeats while nothing moves (?frame_mode=full_frame: whole frames)
    const c = { type: "config", video: true, words: true, pacing: params.get("pacing") || "realtime",
                frame_mode: params.get("frame_mode") || "face_patch" };
    for (const key of ["voice", "speaker", "avatar", "engine"]) if (params.get(key)) c[key] = params.get(key);
    // Not a number: sent as typed, so that the refusal names it (NaN would go as null).
    for (const key of ["fps", "length_scale"]) {
      const value = params.get(key);
      if (value) c[key] = Number.isFinite(Number(value)) ? Number(value) : value;
    }
    return c;
  }

  function connect(quiet = false) {
    retryTimer = null;
    // Over HTTPS the socket is WSS; the page's own ?token= and ?channel= go on to it (the server reads them).
    const query = new URLSearchParams();
    for (const key of ["token", "channel"]) {
      if (params.get(key)) query.set(key, params.get(key));
    }
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws"
      + (query.toString() ? "?" + query : "");
    if (!quiet) setStatus(state.connections ? "reconnecting…" : "connecting…");
    ws = new WebSocket(url);
    refused = false;
    sessionEnded = false;
    state.gaveUp = false;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify(config()));
    ws.onmessage = (m) => (typeof m.data === "string" ? onEvent(JSON.parse(m.data)) : onMedia(m.data));
    ws.onclose = () => {
      const wasConnected = state.connected;
      state.connected = false;
      resetPlayback();
      if (wasConnected) backoffS = 0.25;
      // A refused config (a setting, a token) would be refused again, so the page stops and says what to
      // change; a network error, a full server or one shutting down is retried with the backoff.
      if (refused) {
        state.gaveUp = true;
        setStatus(`${state.error} (not retrying: ${refusedHint()})`, "bad");
        return;
      }
      // The server ended an idle session (--idle-timeout), or refused a text, which ends its session: a
      // new one at once; an idle kiosk shows nothing of it, a refused text stays on screen until the next.
      if (wasConnected && (sessionEnded || textRefused)) {
        connect(!textRefused);
        return;
      }
      setStatus(`disconnected, retrying in ${backoffS.toFixed(1)} s`, "bad");
      retryTimer = setTimeout(connect, backoffS * 1000);
      backoffS = Math.min(backoffS * 2, MAX_BACKOFF_S);
    };
  }

  function refusedHint() {
    if (state.error && state.error.startsWith("unauthenticated")) return "put ?token= in the address and reload";
    return KIOSK ? "fix the setting in the address and reload"
      : "pick another above the text box, or fix the setting in the address and reload";
  }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  // ---- events -----------------------------------------------------------------------------------------
  function onEvent(e) {
    if (e.type === "started") {
      Object.assign(state, { connected: true, sessionId: e.session_id, sampleRate: e.sample_rate, fps: e.fps,
                             engine: e.engine, error: null });
      state.connections += 1;
      if (e.frame_width > 0 && (canvas.width !== e.frame_width || canvas.height !== e.frame_height)) {
        canvas.width = e.frame_width;
        canvas.height = e.frame_height;
      }
      if (e.frame_width > 0 && e.frame_height > 0) {
        $("frame").style.setProperty("--frame-ratio", String(e.frame_width / e.frame_height));  // style.css
      }
      $("fig-engine").textContent = e.engine || "audio only";
      const o = e.options || {};
      Object.assign(state, { voice: o.voice || "", speaker: o.speaker || "", avatar: o.avatar || "" });
      showChoice();
      if (textRefused) setStatus(`not spoken: ${textRefused}`, "warn");
      else setStatus("connected", "ok");
      textRefused = null;
    } else if (e.type === "utterance") {
      noteUtterance(e.utterance_id);
      if (e.kind === "started") {
        utteranceStart.set(e.utterance_id, e.start_sample / state.sampleRate);
        if (awaitingInterruptAck) droppedUtterances.add(e.utterance_id);
      }
      if (e.kind === "interrupted") awaitingInterruptAck = false;
      state.utterances.push({ id: e.utterance_id, kind: e.kind, text: e.text, startSample: e.start_sample,
                              endSample: e.end_sample });
    } else if (e.type === "word") {
      state.wordsReceived += 1;
      if (!isDropped(e.utterance_id)) {
        words.push({ utterance: e.utterance_id, word: e.word, start: e.start_sample / state.sampleRate,
                     end: e.end_sample / state.sampleRate });
      }
    } else if (e.type === "stats") {
      state.stats = e;
      sessionEnded = true;
    } else if (e.type === "warning") {  // e.g. text in a script the voice cannot read, skipped
      state.warnings.push(e.message);
      if (e.code === "text_refused") setStatus(`not spoken: ${e.message}`, "warn");  // the session goes on
      else setStatus(`warning: ${e.message}`, "warn");
    } else if (e.type === "error") {
      state.error = `${e.code}: ${e.message}`;
      // Refused before `started`, the config (a setting, a token) would be refused again; after it, what
      // was refused is a text (over --max-text-chars, nothing readable): another text may well be spoken.
      if (e.code === "invalid_argument" && state.connected) textRefused = e.message;
      else refused = e.code === "invalid_argument" || e.code === "unauthenticated";
      setStatus(state.error, "bad");
    }
  }

  function noteUtterance(id) {
    if (id > maxUtteranceSeen) maxUtteranceSeen = id;
  }

  function isDropped(utterance) {
    return utterance !== 0 && (utterance <= dropThrough || droppedUtterances.has(utterance));
  }

  function onMedia(buffer) {
    const headerLength = new DataView(buffer).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
    const payload = buffer.slice(4 + headerLength);
    noteUtterance(header.utterance_id);
    const audio = header.type === "audio" && header.utterance_id !== 0 ? utteranceAudio(header.utterance_id) : null;
    if (audio) audio.receivedSeconds += header.num_samples / header.sample_rate;
    if (isDropped(header.utterance_id)) {
      if (audio) audio.droppedSeconds += header.num_samples / header.sample_rate;
      return;
    }
    if (header.type === "audio") onAudio(header, payload);
    else if (header.type === "frame") onFrame(header, payload);
  }

  // ---- audio ------------------------------------------------------------------------------------------
  function onAudio(h, payload) {
    state.chunksReceived += 1;
    if (speakAt !== null && h.utterance_id !== 0) {
      state.timeToFirstAudioMs = performance.now() - speakAt;
      $("fig-ttfa").textContent = `${state.timeToFirstAudioMs.toFixed(0)} ms`;
      speakAt = null;
    }
    const myEpoch = epoch;
    const speech = h.utterance_id !== 0;
    if (speech) decodingSpeech += 1;
    // One chain: chunks are scheduled in arrival order even though decoding is asynchronous.
    audioChain = audioChain
      .then(() => audioContext().decodeAudioData(payload))
      .then((buffer) => {
        if (myEpoch === epoch && !isDropped(h.utterance_id)) schedule(h, buffer);
        else if (speech) utteranceAudio(h.utterance_id).droppedSeconds += buffer.duration;
      })
      .catch((err) => { state.error = `audio chunk at sample ${h.start_sample}: ${err}`; })
      .finally(() => { if (speech && myEpoch === epoch) decodingSpeech -= 1; });
  }

  function schedule(h, buffer) {
    const c = audioContext();
    const media = h.start_sample / h.sample_rate;
    if (t0 === null || t0 + media < c.currentTime + MIN_AHEAD_S) {
      // Late in the middle of an utterance: the server runs behind real time; buffer more from now on.
      if (t0 !== null && h.utterance_id !== 0 && h.utterance_id in state.utteranceAudio) {
        lead = Math.min(lead + LEAD_STEP_S, MAX_LEAD_S);
        state.underruns += 1;
        state.leadMs = lead * 1000;
      }
      anchor(media);
    } else {
      trimSilence(h, media);
    }
    const start = t0 + media;
    const node = c.createBufferSource();
    node.buffer = buffer;
    node.connect(c.destination);
    const source = { node, start, end: start + buffer.duration, utterance: h.utterance_id, media };
    node.onended = () => {
      sources = sources.filter((s) => s !== source);
      played(source, source.end, c.currentTime);
    };
    node.start(start);
    sources.push(source);
    if (state.audioStartedAt === null) state.audioStartedAt = start;
    state.scheduledSeconds += buffer.duration;
    state.chunksScheduled += 1;
    if (h.utterance_id !== 0) {
      const u = utteranceAudio(h.utterance_id);
      u.scheduledSeconds += buffer.duration;
      if (u.startedAt === null) u.startedAt = start;
    }
  }

  function utteranceAudio(id) {
    if (!(id in state.utteranceAudio)) {
      state.utteranceAudio[id] = { receivedSeconds: 0, droppedSeconds: 0, scheduledSeconds: 0, playedSeconds: 0,
                                   startedAt: null, endedAt: null };
    }
    return state.utteranceAudio[id];
  }

  // Accounts for a source that stopped sounding at context time `until` (its end, or when it was stopped).
  function played(source, until, now) {
    const seconds = Math.max(0, Math.min(source.end, until) - source.start);
    state.playedSeconds += seconds;
    if (seconds > 0) state.lastAudioEndedAt = now;
    if (source.utterance !== 0) {
      const u = utteranceAudio(source.utterance);
      u.playedSeconds += seconds;
      if (seconds > 0) u.endedAt = now;
    }
  }

  // REALTIME pacing sends silence between utterances; when a slow utterance pushed the mapping late, the
  // silence piles up ahead of the speakers. Dropping queued silence brings the latency back to `lead`.
  function trimSilence(h, media) {
    const c = audioContext();
    if (h.utterance_id !== 0 || t0 + media - c.currentTime <= lead + TRIM_S) return;
    if (sources.some((s) => s.utterance !== 0)) return;
    stopSources();
    anchor(media);
    state.trims += 1;
  }

  // Media time `media` will play `lead` from now: used at the first chunk and whenever one arrives late.
  function anchor(media) {
    t0 = audioContext().currentTime + lead - media;
    state.reanchors += 1;
  }

  function stopSources() {
    const now = audioContext().currentTime;
    for (const s of sources) {
      s.node.onended = null;
      s.node.stop();
      played(s, now, now);
    }
    sources = [];
  }

  // ---- frames -----------------------------------------------------------------------------------------
  function onFrame(h, payload) {
    state.framesReceived += 1;
    const silent = sources.length === 0;
    // While silent (idle frames in realtime pacing) the frames alone keep the mapping current.
    if (t0 === null || (silent && t0 + h.pts < audioContext().currentTime)) anchor(h.pts);
    // face_patch: a patch is drawn at (patch_x, patch_y) over the picture so far; a repeat draws nothing.
    const repeat = h.repeat_of !== undefined && h.repeat_of !== null;
    const x = h.patch_x || 0, y = h.patch_y || 0;
    if (repeat || x || y) patchMode = true;
    const frame = { pts: h.pts, index: h.frame_index, utterance: h.utterance_id, speaking: h.speaking,
                    width: h.width, height: h.height, x, y, repeat, whole: !repeat && !x && !y,
                    blob: repeat ? null : new Blob([payload], { type: "image/jpeg" }), image: null, url: null,
                    decoding: false };
    let i = frames.length;
    while (i > 0 && frames[i - 1].pts > frame.pts) i -= 1;
    if (i > 0 && frames[i - 1].pts === frame.pts) frames[i - 1] = frame;
    else frames.splice(i, 0, frame);
  }

  // "img" (default): the JPEG is loaded into an <img> and decoded by drawImage on this thread when it is
  // shown, so a busy machine cannot leave a due frame waiting in a decoder queue; "bitmap": createImageBitmap
  // decodes ahead on the browser's worker threads.
  function decode(frame) {
    frame.decoding = true;
    decodesInFlight += 1;
    const done = () => { decodesInFlight -= 1; };
    const failed = (err) => { state.error = `frame ${frame.index}: ${err}`; };
    if (DECODER === "bitmap") {
      createImageBitmap(frame.blob).then((bitmap) => { frame.image = bitmap; }, failed).finally(done);
      return;
    }
    const img = new Image();
    frame.url = URL.createObjectURL(frame.blob);
    img.onload = () => { frame.image = img; done(); };
    img.onerror = () => { failed("not a JPEG the browser can read"); done(); };
    img.src = frame.url;
  }

  function release(frame) {
    if (frame.image && typeof frame.image.close === "function") frame.image.close();
    if (frame.url) URL.revokeObjectURL(frame.url);
    frame.image = null;
    frame.url = null;
  }

  function render(now) {
    requestAnimationFrame(render);
    rafGapMs = lastRafAt === null ? 0 : now - lastRafAt;
    lastRafAt = now;
    if (t0 === null || ctx === null) return;
    const heard = heardTime();
    // The media time being heard: from the sounding chunk itself (a late chunk may have moved t0 while the
    // one before it still plays), else from the mapping.
    const playing = sources.find((s) => s.start <= heard && heard < s.end);
    const media = playing ? playing.media + (heard - playing.start) : heard - t0;
    let due = -1;
    while (due + 1 < frames.length && frames[due + 1].pts <= media) due += 1;
    // Decode the due frame first, then the next ones; frames older than the due one are never needed, and
    // a bounded number of decodes in flight keeps a busy machine from queueing stale work.
    // With patches every frame up to the due one is drawn, from the newest whole one among them.
    const first = patchMode ? Math.max(0, frames.findLastIndex((f, i) => i <= due && f.whole)) : Math.max(due, 0);
    for (let i = first; i < frames.length && decodesInFlight < MAX_DECODES; i++) {
      const f = frames[i];
      if (f.pts > media + DECODE_AHEAD_S) break;
      if (!f.decoding && !f.repeat) decode(f);
    }
    if (patchMode) showPatches(first, due);
    // Show the newest due frame that is decoded; older ones are gone for good.
    else for (let i = due; i >= 0; i--) {
      if (frames[i].image === null) continue;
      if (frames[i] !== shown) draw(frames[i]);
      for (const old of frames.splice(0, i)) if (old !== shown) release(old);
      break;
    }
    measureOffset(playing, media);
    showSubtitle(media);
  }

  // Subtitles from the word events: the words of the utterance being heard, the one sounding highlighted
  // (between two words, the last one heard).
  function showSubtitle(media) {
    let current = -1;  // words arrive in media-time order: the last one that has begun
    while (current + 1 < words.length && words[current + 1].start <= media) current += 1;
    if (current > 0) {  // the words of earlier utterances are done with
      const first = words.findIndex((w) => w.utterance === words[current].utterance);
      words = words.slice(first);
      current -= first;
    }
    if (current >= 0 && media > words[current].end + 1.0) current = -1;  // a pause after the words: none
    const utterance = current >= 0 ? words[current].utterance : null;
    const key = current >= 0 ? `${utterance}:${current}` : "";
    if (key === subtitleKey) return;
    subtitleKey = key;
    const box = $("subtitle");
    box.replaceChildren();
    if (current < 0) { state.subtitle = ""; state.subtitleWord = ""; return; }
    const line = words.filter((w) => w.utterance === utterance);
    line.forEach((w, i) => {
      const span = document.createElement("span");
      span.textContent = w.word;
      if (w === words[current]) span.className = "spoken";
      box.append(span, i + 1 < line.length ? " " : "");
    });
    state.subtitle = line.map((w) => w.word).join(" ");
    state.subtitleWord = words[current].word;
  }

  // Frames first..due in order, each once its JPEG is decoded (a patch needs the picture before it).
  function showPatches(first, due) {
    for (const old of frames.splice(0, first)) if (old !== shown) release(old);
    let i = 0;
    for (; i <= due - first; i++) {
      if (!frames[i].repeat && frames[i].image === null) break;
      draw(frames[i]);
    }
    for (const old of frames.splice(0, i)) if (old !== shown) release(old);
  }

  function draw(frame) {
    if (frame.repeat) {
      state.repeatsDrawn += 1;  // nothing changed: the picture stays
    } else if (frame.whole) {
      g.drawImage(frame.image, 0, 0, canvas.width, canvas.height);
    } else {
      const sx = canvas.width / frame.width, sy = canvas.height / frame.height;
      const w = frame.image.naturalWidth || frame.image.width, h = frame.image.naturalHeight || frame.image.height;
      g.drawImage(frame.image, frame.x * sx, frame.y * sy, w * sx, h * sy);
      state.patchesDrawn += 1;
    }
    if (shown && shown !== frame) release(shown);
    shown = frame;
    state.framesDrawn += 1;
    if (frame.speaking) state.speakingFramesDrawn += 1;
    state.shownPts = frame.pts;
    state.shownUtterance = frame.utterance;
    const now = performance.now();
    drawTimes.push(now);
    while (drawTimes.length && drawTimes[0] < now - 1000) drawTimes.shift();
  }

  // Audio clock media time minus the shown frame's pts, while a chunk is audible and its utterance has
  // reached its first frame (before that the previous utterance's last frame is rightly on screen).
  // Shown on time, a frame is 0 to 1/fps older than the audio; more means the video lags.
  function measureOffset(playing, media) {
    if (!playing || shown === null || state.fps <= 0) return;
    const uStart = utteranceStart.get(playing.utterance);
    if (uStart !== undefined && media < Math.ceil(uStart * state.fps - 1e-6) / state.fps) return;
    const offsetMs = (media - shown.pts) * 1000;
    state.lastOffsetMs = offsetMs;
    // The browser painted nothing for a while (a starved machine): what is on screen then says how long the
    // stall was, not how the page keeps time, so it is counted apart.
    if (rafGapMs > STALL_MS) {
      state.stalledTicks += 1;
      state.longestStallMs = Math.max(state.longestStallMs, rafGapMs);
      state.maxStalledOffsetMs = Math.max(state.maxStalledOffsetMs, Math.abs(offsetMs));
      return;
    }
    // The frame due has not arrived yet (nothing newer than the shown one has): the server or the network
    // is late, which the page cannot mend; it keeps the last frame up. Counted apart from its own timing.
    const newest = frames.length ? frames[frames.length - 1].pts : shown.pts;
    if (offsetMs > 1000 / state.fps && newest <= shown.pts) {
      state.lateFrameTicks += 1;
      state.maxLateFrameOffsetMs = Math.max(state.maxLateFrameOffsetMs, offsetMs);
      return;
    }
    state.maxOffsetMs = Math.max(state.maxOffsetMs, Math.abs(offsetMs));
    state.offsetSamples += 1;
    if (playing.utterance !== 0) {
      if (Math.abs(offsetMs) > state.maxSpeechOffsetMs) {
        state.maxSpeechOffsetMs = Math.abs(offsetMs);
        // What was on hand at the worst moment: tells a late frame from a slow decode.
        const next = frames.find((f) => f.pts > shown.pts);
        state.worstSpeechOffset = { offsetMs, media, shownPts: shown.pts, utterance: playing.utterance,
                                    nextPts: next ? next.pts : null, nextDecoded: next ? next.image !== null : null,
                                    newestPts: frames.length ? frames[frames.length - 1].pts : null, rafGapMs };
      }
      state.speechOffsetSamples += 1;
    }
  }

  function resetPlayback() {
    epoch += 1;
    decodingSpeech = 0;
    stopSources();
    for (const f of frames) release(f);
    if (shown) release(shown);
    frames = [];
    shown = null;
    t0 = null;
    utteranceStart.clear();
    droppedUtterances.clear();
    words = [];
    showSubtitle(-1);
    dropThrough = 0;
    maxUtteranceSeen = 0;
    awaitingInterruptAck = false;
  }

  // ---- pickers ----------------------------------------------------------------------------------------
  // The choice lives in the address (?voice=&speaker=&avatar=), so a reload or a bookmark keeps it.
  let voices = [];                 // {name, speakers, default} from GET /v1/audio/voices
  let avatarsListed = [];          // {name, width, height, num_frames, default} from GET /v1/avatars

  async function listing(path) {
    // The page's own ?token= goes on as a bearer token, as it does to the WebSocket.
    const headers = params.get("token") ? { Authorization: `Bearer ${params.get("token")}` } : {};
    const response = await fetch(path, { headers, cache: "no-store" });
    const body = await response.json().catch(() => null);
    if (!response.ok || !body || !Array.isArray(body.data)) {
      const why = body && body.error && body.error.message ? body.error.message : `HTTP ${response.status}`;
      throw new Error(`${path}: ${why}`);
    }
    return body.data;
  }

  function fillSelect(select, items, label) {
    select.replaceChildren(...items.map((item) => new Option(label(item), item.name)));
  }

  // Selects `wanted` when the listing has it; when it does not (an address naming a voice this server lacks),
  // a disabled entry says so and stays selected, so that choosing any real one is a change that reconnects.
  function selectWanted(select, wanted, fallback) {
    for (const old of select.querySelectorAll("option[data-missing]")) old.remove();
    const names = [...select.options].map((o) => o.value);
    if (!wanted || names.includes(wanted)) {
      if (wanted || fallback) select.value = wanted || fallback;
      return;
    }
    const missing = new Option(`${wanted} (not on this server)`, wanted, true, true);
    missing.disabled = true;
    missing.dataset.missing = "1";
    select.prepend(missing);
    select.value = wanted;
  }

  // What the session uses (from its started message) or, before that, what the address asks for.
  function showChoice() {
    if (voices.length) {
      const wantedVoice = state.voice || params.get("voice");
      const fallback = (voices.find((v) => v.default) || voices[0]).name;
      selectWanted($("pick-voice"), wantedVoice, fallback);
      const voice = voices.find((v) => v.name === (wantedVoice || fallback));
      const speakers = (voice && voice.speakers) || [];
      const speakerSelect = $("pick-speaker");
      const wantedSpeaker = state.speaker || params.get("speaker");
      const badSpeaker = Boolean(voice && wantedSpeaker && !speakers.includes(wantedSpeaker));
      if (voice && (speakers.length > 1 || badSpeaker)) {
        if (speakerSelect.dataset.voice !== voice.name) {
          fillSelect(speakerSelect, speakers.map((name) => ({ name })), (s) => s.name);
          speakerSelect.dataset.voice = voice.name;
        }
        selectWanted(speakerSelect, wantedSpeaker, speakers[0]);
      }
      $("pick-speaker-label").hidden = !(speakers.length > 1 || badSpeaker);
    }
    if (avatarsListed.length) {
      selectWanted($("pick-avatar"), state.avatar || params.get("avatar"),
                   (avatarsListed.find((a) => a.default) || avatarsListed[0]).name);
    }
  }

  // A new session with the changed parameter; the other parameters (token, channel, ...) stay.
  function choose(key, value) {
    if (value) params.set(key, value);
    else params.delete(key);
    if (key === "voice") params.delete("speaker");  // a speaker belongs to its voice
    history.replaceState(null, "", `${location.pathname}?${params}${location.hash}`);
    reconnect();
    showChoice();  // a missing entry the user chose away from goes
  }

  function reconnect() {
    if (retryTimer !== null) clearTimeout(retryTimer);
    if (ws) {
      Object.assign(ws, { onopen: null, onmessage: null, onclose: null });
      ws.close();
    }
    state.connected = false;
    Object.assign(state, { voice: "", speaker: "", avatar: "", error: null });
    resetPlayback();
    backoffS = 0.25;
    connect();
  }

  async function loadPickers() {
    const failures = [];
    const [voiceList, avatarList] = await Promise.allSettled(
      [listing("/v1/audio/voices"), listing("/v1/avatars")]);
    if (voiceList.status === "fulfilled" && voiceList.value.length) {
      voices = voiceList.value;
      fillSelect($("pick-voice"), voices,
                 (v) => (v.speakers.length > 1 ? `${v.name} (${v.speakers.length} speakers)` : v.name));
      $("pick-voice").disabled = false;
    } else {
      failures.push(voiceList.status === "fulfilled" ? "no voices listed" : voiceList.reason.message);
    }
    if (avatarList.status === "fulfilled" && avatarList.value.length) {
      avatarsListed = avatarList.value;
      fillSelect($("pick-avatar"), avatarsListed, (a) => `${a.name} (${a.width}×${a.height}`
        + `${a.num_frames > 1 ? `, ${a.num_frames} frames` : ""})`);
      $("pick-avatar").disabled = false;
    } else {
      failures.push(avatarList.status === "fulfilled" ? "no avatars listed" : avatarList.reason.message);
    }
    showChoice();
    if (failures.length) {
      state.pickersError = failures.join("; ");
      $("pickers-status").textContent = `pickers unavailable: ${state.pickersError}`;
    }
  }

  $("pick-voice").addEventListener("change", (e) => choose("voice", e.target.value));
  $("pick-speaker").addEventListener("change", (e) => choose("speaker", e.target.value));
  $("pick-avatar").addEventListener("change", (e) => choose("avatar", e.target.value));

  // ---- controls ---------------------------------------------------------------------------------------
  function speak(text) {
    audioContext().resume();
    if (!text.trim()) return;
    // A warning or a refusal shown was about the text before: this one gets its own, if any.
    if (state.connected && $("status").className === "warn") setStatus("connected", "ok");
    awaitingInterruptAck = false;   // utterances started from here on belong to this text
    speakAt = performance.now();
    send({ type: "text", text, flush: true });
  }

  function stop() {
    audioContext().resume();
    send({ type: "interrupt" });
    epoch += 1;
    decodingSpeech = 0;
    stopSources();
    dropThrough = maxUtteranceSeen;
    awaitingInterruptAck = true;
    const kept = [];
    for (const f of frames) {
      if (f.utterance === 0 || !isDropped(f.utterance)) kept.push(f);
      else if (f !== shown) release(f);
    }
    frames = kept;
    words = words.filter((w) => !isDropped(w.utterance));
    showSubtitle(-1);
    // The server's clock ran ahead of what was heard: what comes next plays `lead` from its arrival.
    t0 = null;
    state.interrupted += 1;
    speakAt = null;
  }

  $("controls").addEventListener("submit", (e) => { e.preventDefault(); speak($("text").value); });
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); speak($("text").value); }
  });
  $("stop").addEventListener("click", stop);
  document.addEventListener("pointerdown", () => audioContext().resume());

  setInterval(() => {
    $("fig-fps").textContent = drawTimes.length.toString();
    $("fig-offset").textContent = state.lastOffsetMs === null ? "–" : `${state.lastOffsetMs.toFixed(0)} ms`;
    $("fig-max-offset").textContent = `${state.maxOffsetMs.toFixed(0)} ms`;
  }, 250);

  // Read-only view for tests and dashboards: a fresh copy on each read.
  Object.defineProperty(window, "lipstream", {
    get: () => Object.freeze({
      ...state, utterances: state.utterances.map((u) => ({ ...u })),
      utteranceAudio: JSON.parse(JSON.stringify(state.utteranceAudio)),
      audioTime: ctx ? ctx.currentTime : null, audioState: ctx ? ctx.state : null,
      playingSources: ctx ? sources.filter((s) => s.start <= ctx.currentTime).length : 0,
      playingSpeech: ctx ? sources.filter((s) => s.utterance !== 0 && s.start <= ctx.currentTime).length : 0,
      pendingSources: sources.length,
      pendingSpeech: decodingSpeech + sources.filter((s) => s.utterance !== 0).length,
      queuedFrames: frames.length, framesPerSecond: drawTimes.length,
    }),
  });
  // Tests and kiosk scripts may speak and stop without the form.
  window.lipstreamSpeak = speak;
  window.lipstreamStop = stop;

  audioContext();
  if (BAD_LEAD) {
    Object.assign(state, { error: `invalid_argument: ${BAD_LEAD}`, gaveUp: true });
    setStatus(`${state.error} (fix it in the address and reload)`, "bad");
  } else {
    connect();
  }
  if (!KIOSK) loadPickers().catch((err) => {
    state.pickersError = String(err);
    $("pickers-status").textContent = `pickers unavailable: ${err}`;
  });
  requestAnimationFrame(render);
})();
