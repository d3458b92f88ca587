// The regression runner: a main() for a fuzz target's LLVMFuzzerTestOneInput, built with the
// normal compiler (no libFuzzer), that runs every file of the given corpus directories (or
// files) through it once. A crash, a sanitizer report or a trapped invariant fails it; so
// does an empty corpus (a wrong path must not pass as "nothing failed").
//
//   fuzz_segment_regression tests/fuzz/corpus/segment

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::vector<std::string> inputs_of(const std::string& arg) {
  std::vector<std::string> out;
  std::error_code ec;
  if (std::filesystem::is_directory(arg, ec)) {
    for (const auto& e : std::filesystem::directory_iterator(arg, ec))
      if (e.is_regular_file(ec)) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());  // the same order every run
  } else if (std::filesystem::is_regular_file(arg, ec)) {
    out.push_back(arg);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  std::size_t total = 0;
  for (int i = 1; i < argc; ++i) {
    const std::vector<std::string> files = inputs_of(argv[i]);
    if (files.empty()) {
      std::fprintf(stderr, "%s: no inputs in %s\n", argv[0], argv[i]);
      return 1;
    }
    for (const auto& f : files) {
      std::ifstream in(f, std::ios::binary);
      const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) {
        std::fprintf(stderr, "%s: cannot read %s\n", argv[0], f.c_str());
        return 1;
      }
      // Named before it runs: a crash report is then next to the input that caused it.
      std::fprintf(stderr, "running %s (%zu bytes)\n", f.c_str(), bytes.size());
      (void)LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                   bytes.size());
      ++total;
    }
  }
  std::printf("%zu input(s) passed\n", total);
  return 0;
}
