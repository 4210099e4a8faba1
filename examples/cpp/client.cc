// A lipstream client in C++ (grpc++), the way an Unreal plugin or any native engine talks to the server:
// one bidirectional Converse stream; the sentence goes in word by word (as an LLM streams it), and back
// come the audio (written to a WAV file by its start_sample), the video frames, the word timings and the
// ARKit blendshape frames, all on one media clock.
//
//   lipstream_client [HOST:PORT] ["sentence"] [OUT.wav]
//     (defaults: $LIPSTREAM_TARGET or 127.0.0.1:50051, a sample sentence, lipstream_client.wav;
//      $LIPSTREAM_TOKEN is sent as 'authorization: Bearer TOKEN' when set)
//
// Prints one JSON line of counts. Exit status: 0 when audio, frames, words (in media-time order) and
// blendshape frames (one weight per name) all came back with the session's stats; 1 when something was
// missing; 2 on a gRPC error.

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lipstream/v1/lipstream.grpc.pb.h"

namespace v1 = lipstream::v1;

namespace {

constexpr int kDeadlineSeconds = 120;

// A mono 16-bit PCM WAV file: the RIFF header, then the samples.
bool WriteWav(const std::string& path, const std::vector<int16_t>& samples, int sample_rate) {
  std::ofstream out(path, std::ios::binary);
  if (!out) return false;
  auto u32 = [&out](uint32_t v) { for (int i = 0; i < 4; ++i) out.put(static_cast<char>((v >> (8 * i)) & 0xff)); };
  auto u16 = [&out](uint16_t v) { out.put(static_cast<char>(v & 0xff)); out.put(static_cast<char>(v >> 8)); };
  const uint32_t data_bytes = static_cast<uint32_t>(samples.size() * 2);
  out.write("RIFF", 4); u32(36 + data_bytes); out.write("WAVE", 4);
  out.write("fmt ", 4); u32(16); u16(1); u16(1); u32(sample_rate); u32(sample_rate * 2); u16(2); u16(16);
  out.write("data", 4); u32(data_bytes);
  for (int16_t s : samples) u16(static_cast<uint16_t>(s));
  return static_cast<bool>(out);
}

std::vector<std::string> SplitKeepingSpaces(const std::string& text) {
  std::vector<std::string> pieces;
  std::string current;
  for (char c : text) {
    current += c;
    if (c == ' ') { pieces.push_back(current); current.clear(); }
  }
  if (!current.empty()) pieces.push_back(current);
  return pieces;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const char* env_target = std::getenv("LIPSTREAM_TARGET");
  const std::string target = argc > 1 ? argv[1] : (env_target ? env_target : "127.0.0.1:50051");
  const std::string sentence = argc > 2 ? argv[2] : "Hello from C++. Every word comes back with its timing.";
  const std::string wav_path = argc > 3 ? argv[3] : "lipstream_client.wav";

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = v1::LipStream::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(kDeadlineSeconds));
  if (const char* token = std::getenv("LIPSTREAM_TOKEN"); token && *token) {
    context.AddMetadata("authorization", std::string("Bearer ") + token);
  }
  std::shared_ptr<grpc::ClientReaderWriter<v1::ConverseRequest, v1::ConverseResponse>> stream(
      stub->Converse(&context));

  // The writer runs beside the reader: the first message configures the session, then the text one word at
  // a time, then the end of input.
  std::thread writer([stream, sentence] {
    v1::ConverseRequest request;
    v1::SessionConfig* config = request.mutable_config();
    config->set_audio_format(v1::PCM16);  // raw samples: this client writes one WAV of the whole session
    config->mutable_video()->set_enabled(true);
    config->set_words(true);
    config->set_blendshapes(true);
    bool ok = stream->Write(request);
    for (const std::string& word : SplitKeepingSpaces(sentence)) {
      if (!ok) break;
      v1::ConverseRequest text;
      text.mutable_text()->set_text(word);
      ok = stream->Write(text);
    }
    if (ok) {
      v1::ConverseRequest end;
      end.mutable_control()->set_action(v1::Control::END_OF_INPUT);
      stream->Write(end);
    }
    stream->WritesDone();
  });

  int sample_rate = 0;
  size_t names = 0;
  long audio_chunks = 0, frames = 0, words = 0, blendshape_frames = 0, bad_blendshapes = 0;
  bool words_in_order = true, stats = false;
  int64_t last_word_start = -1;
  std::vector<int16_t> samples;
  std::ostringstream spoken;
  v1::ConverseResponse response;
  while (stream->Read(&response)) {
    switch (response.response_case()) {
      case v1::ConverseResponse::kStarted:
        sample_rate = response.started().sample_rate();
        names = static_cast<size_t>(response.started().blendshape_names_size());
        break;
      case v1::ConverseResponse::kAudio: {
        const v1::AudioChunk& audio = response.audio();
        ++audio_chunks;
        const size_t start = static_cast<size_t>(audio.start_sample());
        const size_t count = audio.data().size() / 2;
        if (samples.size() < start + count) samples.resize(start + count, 0);
        std::memcpy(samples.data() + start, audio.data().data(), count * 2);  // little-endian PCM16
        break;
      }
      case v1::ConverseResponse::kFrame:
        ++frames;
        break;
      case v1::ConverseResponse::kWord: {
        const v1::WordEvent& word = response.word();
        ++words;
        words_in_order = words_in_order && word.start_sample() >= last_word_start &&
                         word.end_sample() >= word.start_sample();
        last_word_start = word.start_sample();
        spoken << (words > 1 ? " " : "") << word.word();
        break;
      }
      case v1::ConverseResponse::kBlendshapes:
        ++blendshape_frames;
        if (static_cast<size_t>(response.blendshapes().weights_size()) != names) ++bad_blendshapes;
        break;
      case v1::ConverseResponse::kStats:
        stats = true;
        break;
      default:
        break;
    }
  }
  writer.join();
  grpc::Status status = stream->Finish();
  if (!status.ok()) {
    std::cerr << "lipstream cpp client: gRPC status " << status.error_code() << " from " << target << ": "
              << status.error_message() << std::endl;
    return 2;
  }
  if (sample_rate > 0 && !WriteWav(wav_path, samples, sample_rate)) {
    std::cerr << "lipstream cpp client: cannot write " << wav_path << std::endl;
    return 1;
  }
  std::cout << "{\"sample_rate\": " << sample_rate << ", \"audio_chunks\": " << audio_chunks
            << ", \"audio_samples\": " << samples.size() << ", \"frames\": " << frames
            << ", \"words\": " << words << ", \"words_in_order\": " << (words_in_order ? "true" : "false")
            << ", \"spoken\": \"" << JsonEscape(spoken.str()) << "\", \"blendshape_names\": " << names
            << ", \"blendshape_frames\": " << blendshape_frames << ", \"bad_blendshape_frames\": "
            << bad_blendshapes << ", \"stats\": " << (stats ? "true" : "false") << ", \"wav\": \""
            << JsonEscape(wav_path) << "\"}" << std::endl;
  const bool ok = audio_chunks > 0 && frames > 0 && words > 0 && words_in_order && names > 0 &&
                  blendshape_frames > 0 && bad_blendshapes == 0 && stats;
  if (!ok) std::cerr << "lipstream cpp client: expected audio, frames, words and blendshapes" << std::endl;
  return ok ? 0 : 1;
}
