// A fault-injecting, in-memory FileSystem for the log tests (in the spirit of leveldb's
// fault_injection_test): it remembers, per file, the contents as of the last successful
// fdatasync, and per directory, the entries as of the last successful fsync(dir) plus the
// creates, renames and unlinks made since. crash() then produces a state the disk could
// really be in after a power cut:
//   - directory entries: the durable ones plus a prefix (keep_dir_ops) of the later
//     operations, in order (what an ordered-metadata file system like ext4 may persist);
//   - file contents: the synced bytes; in drop mode nothing more, in garble mode followed by
//     a random-length stretch of the unsynced region in which every 512-byte sector is
//     independently random, zeros, or what was written (pages persisted in any order).
// Faults: a failing fdatasync (one shot), a full disk (ENOSPC after writing what fits), and
// die_after(n): the process "dies" after n more mutating operations - every later one fails
// with EIO and changes nothing, so a crash() then yields the state at that instant.
//
// Mutating operations (counted, traced, killed by die_after): create, append, sync,
// truncate, rename, unlink, sync of a directory. Opens, reads and listings are free.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "log/file.hpp"

namespace shmq::log::test {

class FaultFs final : public FileSystem {
 public:
  enum class CrashMode { drop, garble };

  explicit FaultFs(std::uint64_t seed = 1) : rng_(seed) {}

  Result<std::unique_ptr<Directory>> open_dir(const std::string& path,
                                              const DirOptions& options) override {
    if (!dirs_.contains(path)) {
      if (!options.create) return io_error(ENOENT, "opening data dir", path);
      dirs_[path];
    }
    return std::unique_ptr<Directory>(new Dir(*this, path));
  }

  // --- Faults --------------------------------------------------------------------------
  void fail_next_sync(int err = EIO) { fail_sync_ = err; }
  void set_space_left(std::uint64_t bytes) { space_left_ = bytes; }
  void die_after(std::uint64_t ops) { ops_left_ = ops; }
  bool dead() const { return dead_; }
  std::uint64_t ops() const { return ops_; }
  const std::vector<std::string>& trace() const { return trace_; }
  void clear_trace() { trace_.clear(); }

  // --- Crash ---------------------------------------------------------------------------
  std::size_t pending_dir_ops(const std::string& dir) const {
    auto it = dirs_.find(dir);
    return it == dirs_.end() ? 0 : it->second.pending.size();
  }

  void crash(CrashMode mode, std::size_t keep_dir_ops = 0) {
    for (auto& [path, d] : dirs_) {
      auto entries = d.durable;
      for (std::size_t i = 0; i < d.pending.size() && i < keep_dir_ops; ++i) {
        const DirOp& op = d.pending[i];
        switch (op.kind) {
          case DirOp::create: entries[op.a] = op.inode; break;
          case DirOp::rename:
            if (auto it = entries.find(op.a); it != entries.end()) {
              auto inode = it->second;
              entries.erase(it);
              entries[op.b] = inode;
            }
            break;
          case DirOp::unlink: entries.erase(op.a); break;
        }
      }
      d.durable = entries;
      d.live = std::move(entries);
      d.pending.clear();
      for (auto& [name, inode] : d.live) settle(*inode, mode);
    }
    ++epoch_;  // handles opened before the crash belong to a dead process
    dead_ = false;
    ops_left_.reset();
    fail_sync_ = 0;
    space_left_ = UINT64_MAX;
  }

  // --- Inspection and tampering (as if done to the disk by someone else) ---------------
  std::vector<std::string> names(const std::string& dir) const {
    std::vector<std::string> out;
    if (auto it = dirs_.find(dir); it != dirs_.end())
      for (const auto& [name, inode] : it->second.live) out.push_back(name);
    return out;
  }
  bool exists(const std::string& dir, const std::string& name) const {
    auto it = dirs_.find(dir);
    return it != dirs_.end() && it->second.live.contains(name);
  }
  std::vector<std::byte> read(const std::string& dir, const std::string& name) const {
    return dirs_.at(dir).live.at(name)->data;
  }
  // Writes a file durably (entry and contents), replacing any file of that name.
  void write(const std::string& dir, const std::string& name, std::vector<std::byte> bytes) {
    auto& d = dirs_[dir];
    auto inode = std::make_shared<Inode>();
    inode->data = bytes;
    inode->durable = std::move(bytes);
    d.live[name] = inode;
    d.durable[name] = inode;
  }
  void remove(const std::string& dir, const std::string& name) {
    auto& d = dirs_.at(dir);
    d.live.erase(name);
    d.durable.erase(name);
  }

 private:
  struct Inode {
    std::vector<std::byte> data;     // what reads see (the page cache)
    std::vector<std::byte> durable;  // what the disk holds
  };
  struct DirOp {
    enum Kind { create, rename, unlink } kind;
    std::string a, b;
    std::shared_ptr<Inode> inode;
  };
  struct DirState {
    std::map<std::string, std::shared_ptr<Inode>> live, durable;
    std::vector<DirOp> pending;  // since the last fsync(dir)
  };

  // Admits a mutating operation, or says which errno it fails with.
  int admit(std::uint64_t epoch, std::string what) {
    if (epoch != epoch_ || dead_) return EIO;
    if (ops_left_) {
      if (*ops_left_ == 0) {
        dead_ = true;
        return EIO;
      }
      --*ops_left_;
    }
    ++ops_;
    trace_.push_back(std::move(what));
    return 0;
  }

  void settle(Inode& f, CrashMode mode) {
    std::vector<std::byte> disk = f.durable;
    if (mode == CrashMode::garble && f.data.size() > disk.size()) {
      const std::size_t unsynced = f.data.size() - disk.size();
      const std::size_t n = std::uniform_int_distribution<std::size_t>(0, unsynced)(rng_);
      for (std::size_t i = 0; i < n; i += 512) {
        const int kind = std::uniform_int_distribution<int>(0, 3)(rng_);
        for (std::size_t j = i; j < n && j < i + 512; ++j) {
          const std::size_t at = disk.size();
          if (kind <= 1)
            disk.push_back(static_cast<std::byte>(rng_()));
          else if (kind == 2)
            disk.push_back(std::byte{0});
          else
            disk.push_back(f.data[at]);
        }
      }
    }
    f.data = disk;
    f.durable = std::move(disk);
  }

  class File final : public WritableFile {
   public:
    File(FaultFs& fs, std::shared_ptr<Inode> inode, std::string path)
        : fs_(fs), inode_(std::move(inode)), path_(std::move(path)), epoch_(fs.epoch_) {}
    VoidResult append(std::span<const std::byte> data) override {
      if (int e = fs_.admit(epoch_, "append " + name() + " " + std::to_string(data.size())))
        return io_error(e, "writing", path_);
      const std::size_t n =
          static_cast<std::size_t>(std::min<std::uint64_t>(data.size(), fs_.space_left_));
      inode_->data.insert(inode_->data.end(), data.begin(),
                          data.begin() + static_cast<std::ptrdiff_t>(n));
      if (fs_.space_left_ != UINT64_MAX) fs_.space_left_ -= n;
      if (n < data.size()) return io_error(ENOSPC, "writing", path_);
      return {};
    }
    VoidResult sync() override {
      if (int e = fs_.admit(epoch_, "sync " + name()))
        return io_error(e, "syncing (fdatasync)", path_);
      if (fs_.fail_sync_ != 0) {
        const int e = fs_.fail_sync_;
        fs_.fail_sync_ = 0;
        return io_error(e, "syncing (fdatasync)", path_);
      }
      inode_->durable = inode_->data;
      return {};
    }
    VoidResult close() override { return {}; }
    const std::string& path() const override { return path_; }

   private:
    std::string name() const { return path_.substr(path_.rfind('/') + 1); }
    FaultFs& fs_;
    std::shared_ptr<Inode> inode_;
    std::string path_;
    std::uint64_t epoch_;
  };

  class Reader final : public ReadableFile {
   public:
    Reader(std::vector<std::byte> data, std::string path)
        : data_(std::move(data)), path_(std::move(path)) {}
    Result<std::uint64_t> size() override { return std::uint64_t{data_.size()}; }
    Result<std::size_t> read_at(std::uint64_t offset, std::span<std::byte> out) override {
      if (offset >= data_.size()) return std::size_t{0};
      const std::size_t n = std::min<std::size_t>(out.size(), data_.size() - offset);
      std::copy_n(data_.begin() + static_cast<std::ptrdiff_t>(offset), n, out.begin());
      return n;
    }
    const std::string& path() const override { return path_; }

   private:
    std::vector<std::byte> data_;
    std::string path_;
  };

  class Lock final : public FileLock {};

  class Dir final : public Directory {
   public:
    Dir(FaultFs& fs, std::string path) : fs_(fs), path_(std::move(path)), epoch_(fs.epoch_) {}
    const std::string& path() const override { return path_; }
    Result<std::vector<std::string>> list() override { return fs_.names(path_); }

    Result<std::unique_ptr<WritableFile>> create_file(std::string_view name) override {
      const std::string n(name);
      if (int e = fs_.admit(epoch_, "create " + n)) return io_error(e, "creating", path_of(n));
      auto& d = state();
      if (d.live.contains(n)) return io_error(EEXIST, "creating", path_of(n));
      auto inode = std::make_shared<Inode>();
      d.live[n] = inode;
      d.pending.push_back({DirOp::create, n, {}, inode});
      return std::unique_ptr<WritableFile>(new File(fs_, inode, path_of(n)));
    }
    Result<std::unique_ptr<WritableFile>> open_append(std::string_view name) override {
      const std::string n(name);
      auto& d = state();
      if (epoch_ != fs_.epoch_) return io_error(EIO, "opening", path_of(n));
      auto it = d.live.find(n);
      if (it == d.live.end()) return io_error(ENOENT, "opening", path_of(n));
      return std::unique_ptr<WritableFile>(new File(fs_, it->second, path_of(n)));
    }
    Result<std::unique_ptr<ReadableFile>> open_read(std::string_view name) override {
      const std::string n(name);
      auto& d = state();
      auto it = d.live.find(n);
      if (it == d.live.end()) return io_error(ENOENT, "opening", path_of(n));
      return std::unique_ptr<ReadableFile>(new Reader(it->second->data, path_of(n)));
    }
    VoidResult truncate(std::string_view name, std::uint64_t size) override {
      const std::string n(name);
      if (int e = fs_.admit(epoch_, "truncate " + n + " " + std::to_string(size)))
        return io_error(e, "truncating", path_of(n));
      auto it = state().live.find(n);
      if (it == state().live.end()) return io_error(ENOENT, "truncating", path_of(n));
      it->second->data.resize(static_cast<std::size_t>(size));
      return {};
    }
    VoidResult rename(std::string_view from, std::string_view to, bool replace) override {
      const std::string f(from), t(to);
      if (int e = fs_.admit(epoch_, "rename " + f + " " + t))
        return io_error(e, "renaming " + path_of(f) + " to", path_of(t));
      auto& d = state();
      auto it = d.live.find(f);
      if (it == d.live.end()) return io_error(ENOENT, "renaming " + path_of(f) + " to", path_of(t));
      if (!replace && d.live.contains(t))
        return io_error(EEXIST, "renaming " + path_of(f) + " to", path_of(t));
      auto inode = it->second;
      d.live.erase(it);
      d.live[t] = inode;
      d.pending.push_back({DirOp::rename, f, t, {}});
      return {};
    }
    VoidResult unlink(std::string_view name) override {
      const std::string n(name);
      if (int e = fs_.admit(epoch_, "unlink " + n)) return io_error(e, "removing", path_of(n));
      auto& d = state();
      if (d.live.erase(n) == 0) return io_error(ENOENT, "removing", path_of(n));
      d.pending.push_back({DirOp::unlink, n, {}, {}});
      return {};
    }
    VoidResult sync() override {
      if (int e = fs_.admit(epoch_, "syncdir")) return io_error(e, "syncing directory", path_);
      auto& d = state();
      d.durable = d.live;
      d.pending.clear();
      return {};
    }
    Result<std::unique_ptr<FileLock>> lock(std::string_view, bool) override {
      return std::unique_ptr<FileLock>(new Lock());
    }

   private:
    DirState& state() { return fs_.dirs_[path_]; }
    FaultFs& fs_;
    std::string path_;
    std::uint64_t epoch_;
  };

  std::map<std::string, DirState> dirs_;
  std::mt19937_64 rng_;
  std::uint64_t epoch_ = 0;
  std::uint64_t ops_ = 0;
  std::vector<std::string> trace_;
  std::optional<std::uint64_t> ops_left_;
  bool dead_ = false;
  int fail_sync_ = 0;
  std::uint64_t space_left_ = UINT64_MAX;
};

}  // namespace shmq::log::test
