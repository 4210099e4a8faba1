#!/usr/bin/env node
// A lipstream client in Node.js: it loads the same .proto as every other client, streams a sentence to
// Converse word by word (as an LLM would), and checks that it gets WAV audio chunks (RIFF/WAVE) and JPEG
// frames (FF D8) back. Exit status: 0 when it did, 1 when the stream lacked them, 2 on a gRPC error, 3 on a
// bad option.
//
//   node client.js [OPTIONS] [HOST:PORT] ["sentence"]   (default target: $LIPSTREAM_TARGET or 127.0.0.1:50051)
//
// A server with TLS and tokens (lipstream serve --tls-cert ... --auth-token-file ...):
//   --ca-cert PATH       PEM root(s) that signed the server's certificate; implies TLS ($LIPSTREAM_CA_CERT)
//   --tls                TLS with the system's roots
//   --client-cert PATH   client certificate and key for a server that requires one (mTLS;
//   --client-key PATH    $LIPSTREAM_CLIENT_CERT, $LIPSTREAM_CLIENT_KEY)
//   --token TOKEN        sent as 'authorization: Bearer TOKEN' ($LIPSTREAM_TOKEN, which `ps` does not show)
//
//   --face-patch         frame_mode FACE_PATCH: after the first frame, only the mouth's region (a JPEG to draw
//                        at patch_x, patch_y over the picture so far) and repeats with no JPEG (repeat_of)

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'protos', 'lipstream', 'v1', 'lipstream.proto');
const DEADLINE_MS = 120000;

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      'ca-cert': { type: 'string', default: process.env.LIPSTREAM_CA_CERT || '' },
      'client-cert': { type: 'string', default: process.env.LIPSTREAM_CLIENT_CERT || '' },
      'client-key': { type: 'string', default: process.env.LIPSTREAM_CLIENT_KEY || '' },
      token: { type: 'string', default: process.env.LIPSTREAM_TOKEN || '' },
      tls: { type: 'boolean', default: false },
      'face-patch': { type: 'boolean', default: false },
    },
  });
} catch (error) {
  console.error(`lipstream node client: ${error.message}`);
  process.exit(3);
}
const options = args.values;
const target = args.positionals[0] || process.env.LIPSTREAM_TARGET || '127.0.0.1:50051';
const sentence = args.positionals[1] || 'Hello from Node. The same contract serves clients in any language.';

// TLS when any certificate option (or --tls) is given; a plain-text channel otherwise (a loopback server).
function channelCredentials() {
  const read = (name) => {
    if (!options[name]) return null;
    try {
      return fs.readFileSync(options[name]);
    } catch (error) {
      console.error(`lipstream node client: --${name} ${options[name]}: ${error.message}`);
      process.exit(3);
    }
  };
  if (!(options.tls || options['ca-cert'] || options['client-cert'] || options['client-key'])) {
    return grpc.credentials.createInsecure();
  }
  if (!options['client-cert'] !== !options['client-key']) {
    console.error('lipstream node client: a client certificate needs both --client-cert and --client-key');
    process.exit(3);
  }
  return grpc.credentials.createSsl(read('ca-cert'), read('client-key'), read('client-cert'));
}

const definition = protoLoader.loadSync(PROTO, {
  keepCase: true, // field names as in the .proto: start_sample, frame_index
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true, // response.response names the field that is set
});
const { lipstream } = grpc.loadPackageDefinition(definition);
const client = new lipstream.v1.LipStream(target, channelCredentials());
const metadata = new grpc.Metadata();
if (options.token) metadata.set('authorization', `Bearer ${options.token.trim()}`);

const seen = {
  audio_chunks: 0, wav_chunks: 0, audio_samples: 0, frames: 0, jpeg_frames: 0, words: [], blendshape_frames: 0,
  blendshape_names: 0, spoken_text: null, stats: null, patch_frames: 0, repeat_frames: 0, video_bytes: 0,
};
let sampleRate = 0;

const call = client.Converse(metadata, { deadline: Date.now() + DEADLINE_MS });

call.on('data', (response) => {
  switch (response.response) {
    case 'started':
      sampleRate = response.started.sample_rate;
      seen.blendshape_names = response.started.blendshape_names.length;
      break;
    case 'word': // a word on the media clock: subtitles, or what an agent's listener has heard
      seen.words.push(response.word.word);
      break;
    case 'blendshapes': // ARKit weights for frame frame_index, in the order of started.blendshape_names
      if (response.blendshapes.weights.length === seen.blendshape_names) seen.blendshape_frames += 1;
      break;
    case 'utterance': // INTERRUPTED carries spoken_text: the text up to the last word the client received
      if (response.utterance.kind === 'INTERRUPTED') seen.spoken_text = response.utterance.spoken_text;
      break;
    case 'audio': {
      const data = response.audio.data;
      seen.audio_chunks += 1;
      seen.audio_samples += response.audio.num_samples;
      if (data.subarray(0, 4).toString('latin1') === 'RIFF' && data.subarray(8, 12).toString('latin1') === 'WAVE') {
        seen.wav_chunks += 1;
      }
      break;
    }
    case 'frame': {
      const jpeg = response.frame.jpeg;
      seen.frames += 1;
      if (jpeg.length > 2 && jpeg[0] === 0xff && jpeg[1] === 0xd8) seen.jpeg_frames += 1;
      seen.video_bytes += jpeg.length;
      // FACE_PATCH: a patch is drawn at (patch_x, patch_y) over the picture so far; a repeat has no JPEG
      // (proto-loader names a set optional field in its synthetic oneof, `_repeat_of`).
      if (response.frame._repeat_of === 'repeat_of' && jpeg.length === 0) seen.repeat_frames += 1;
      else if (response.frame.patch_x || response.frame.patch_y) seen.patch_frames += 1;
      break;
    }
    case 'stats':
      seen.stats = response.stats;
      break;
    default:
      break;
  }
});

call.on('error', (error) => {
  console.error(`lipstream node client: ${grpc.status[error.code]} from ${target}: ${error.details}`);
  client.close();
  process.exit(2);
});

call.on('end', () => {
  client.close();
  const audioSeconds = sampleRate ? seen.audio_samples / sampleRate : 0;
  console.log(JSON.stringify({ ...seen, sample_rate: sampleRate, audio_seconds: audioSeconds }));
  const ok = seen.audio_chunks > 0 && seen.wav_chunks === seen.audio_chunks
    && seen.frames > 0 && seen.jpeg_frames + seen.repeat_frames === seen.frames && seen.stats !== null;
  if (!ok) console.error('lipstream node client: expected WAV audio chunks and JPEG frames; see the counts above');
  process.exitCode = ok ? 0 : 1;
});

// The first message configures the session; then the text, one word at a time; then the end of input.
const video = { enabled: true, frame_mode: options['face-patch'] ? 'FACE_PATCH' : 'FRAME_MODE_UNSPECIFIED' };
call.write({ config: { video, words: true, blendshapes: true } });
for (const word of sentence.split(/(?<= )/)) call.write({ text: { text: word } });
call.write({ control: { action: 'END_OF_INPUT' } });
call.end();
