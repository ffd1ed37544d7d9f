#ifndef MOELAB_CORE_TESTING_FILE_SIZE_LIMIT_H_
#define MOELAB_CORE_TESTING_FILE_SIZE_LIMIT_H_

// A full disk for tests: while a FileSizeLimit lives, writes that would grow
// a file past `bytes` fail with EFBIG, as writes to a full disk fail with
// ENOSPC: a real kernel write error in the real directory, with a real
// partial file left on disk (unlike /dev/full, which is not a directory).
//
//   {
//     FileSizeLimit full(4096);
//     EXPECT_FALSE(SaveCheckpoint(path, model, optimizer, state).ok());
//   }

#include <signal.h>
#include <sys/resource.h>

namespace moelab {

class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);  // else the kernel kills the test
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit limited = old_;
    limited.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limited);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit old_;
  sighandler_t old_handler_;
};

}  // namespace moelab

#endif  // MOELAB_CORE_TESTING_FILE_SIZE_LIMIT_H_
