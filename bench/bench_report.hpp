// shmq-bench: what the run prints and writes: the table, JSON lines, the ratios against the
// targets, and the plots (gnuplot script, data files, PNGs).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "bench_runs.hpp"
#include "bench_util.hpp"

namespace shmq_bench {

// Table rows, printed as scenarios finish; a header whenever the kind of row changes.
class TablePrinter {
 public:
  explicit TablePrinter(std::FILE* out) : out_(out) {}
  void row(const Outcome& o);

 private:
  std::FILE* out_;
  int section_ = -1;
};

std::string json_line(const Outcome& o, const Machine& m);

// The targets of the issue (64 B, durability none) and the durability comparisons.
void print_targets(std::FILE* out, const std::vector<Outcome>& all, const std::string& data_fs);

// Writes the gnuplot script and its data files to `dir` and runs gnuplot if it is on PATH.
// Returns a line saying what happened.
std::string write_plots(const std::string& dir, const std::vector<Outcome>& all,
                        const Machine& m);

}  // namespace shmq_bench
