#include "core/distributed/local_launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moelab {
namespace {

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status)) return absl::StrCat("exited with status ", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  return "stopped";
}

int ExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

// The launcher's own SIGINT/SIGTERM, which its loop passes on to the
// workers (a handler may only set a flag).
volatile sig_atomic_t g_signal = 0;
void RecordSignal(int signal_number) { g_signal = signal_number; }

// The environment of worker `rank`: this process's, with the job's
// variables replacing any of the same name. Built before fork: a child of a
// multithreaded parent may not allocate before exec.
std::vector<std::string> WorkerEnvironment(const LaunchOptions& options, int rank, int port) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const size_t equals = text.find('=');
    if (equals != std::string::npos) variables[text.substr(0, equals)] = text.substr(equals + 1);
  }
  for (const std::string& entry : options.environment) {
    const size_t equals = entry.find('=');
    if (equals != std::string::npos) variables[entry.substr(0, equals)] = entry.substr(equals + 1);
  }
  for (const std::string& name : options.unset_environment) variables.erase(name);
  variables["RANK"] = std::to_string(rank);
  variables["LOCAL_RANK"] = std::to_string(rank);
  variables["WORLD_SIZE"] = std::to_string(options.nproc);
  variables["LOCAL_WORLD_SIZE"] = std::to_string(options.nproc);
  variables["MASTER_ADDR"] = "127.0.0.1";
  variables["MASTER_PORT"] = std::to_string(port);
  std::vector<std::string> environment;
  for (const auto& [name, value] : variables) environment.push_back(name + "=" + value);
  return environment;
}

}  // namespace

absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::InternalError(absl::StrCat("finding a free port on 127.0.0.1: ", error));
  }
  close(fd);
  return static_cast<int>(ntohs(address.sin_port));
}

std::vector<std::string> TestRunnerVariables() {
  return {"XML_OUTPUT_FILE",   "TEST_PREMATURE_EXIT_FILE", "TEST_SHARD_STATUS_FILE",
          "GTEST_SHARD_INDEX", "GTEST_TOTAL_SHARDS",       "GTEST_OUTPUT",
          "TEST_SHARD_INDEX",  "TEST_TOTAL_SHARDS"};
}

absl::StatusOr<int> LaunchLocalWorkers(const LaunchOptions& options) {
  if (options.nproc < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--nproc_per_node: ", options.nproc, " must be at least 1"));
  }
  if (options.argv.empty()) return absl::InvalidArgumentError("no worker command line");
  int port = options.master_port;
  if (port == 0) {
    absl::StatusOr<int> free_port = FreeLoopbackPort();
    if (!free_port.ok()) return free_port.status();
    port = *free_port;
  }
  std::vector<char*> argv;
  for (const std::string& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  // Before the first fork, so that a signal while starting reaches them too
  // (execve resets the handlers in the workers).
  g_signal = 0;
  struct sigaction record {};
  record.sa_handler = RecordSignal;
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &record, &old_int);
  sigaction(SIGTERM, &record, &old_term);
  const pid_t launcher = getpid();

  std::map<pid_t, int> workers;  // pid -> rank
  for (int rank = 0; rank < options.nproc; ++rank) {
    std::vector<std::string> environment = WorkerEnvironment(options, rank, port);
    std::vector<char*> envp;
    for (std::string& entry : environment) envp.push_back(entry.data());
    envp.push_back(nullptr);
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      const std::string error = std::strerror(errno);
      for (const auto& [started, r] : workers) {
        kill(started, SIGKILL);
        waitpid(started, nullptr, 0);
      }
      sigaction(SIGINT, &old_int, nullptr);
      sigaction(SIGTERM, &old_term, nullptr);
      return absl::InternalError(absl::StrCat("fork of worker ", rank, ": ", error));
    }
    if (pid == 0) {
      // Only async-signal-safe calls between fork and exec. A launcher that
      // is killed takes its workers with it.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != launcher) _exit(128 + SIGTERM);
      execve(argv[0], argv.data(), envp.data());
      static const char kMessage[] = "launcher: cannot start a worker (execve failed)\n";
      (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
      _exit(127);
    }
    workers[pid] = rank;
  }

  using Clock = std::chrono::steady_clock;
  int first_failure = 0;
  Clock::time_point terminate_at = Clock::time_point::max(), kill_at = Clock::time_point::max();
  while (!workers.empty()) {
    // Only this launcher's workers: the program may have other children.
    pid_t pid = 0;
    int wait_status = 0;
    for (const auto& [candidate, rank] : workers) {
      if (waitpid(candidate, &wait_status, WNOHANG) == candidate) {
        pid = candidate;
        break;
      }
    }
    if (pid > 0) {
      const int rank = workers[pid];
      workers.erase(pid);
      if (ExitCode(wait_status) != 0) {
        std::fprintf(stderr, "launcher: worker rank %d (pid %d) %s\n", rank, static_cast<int>(pid),
                     DescribeExit(wait_status).c_str());
        if (first_failure == 0) {
          first_failure = ExitCode(wait_status);
          terminate_at = Clock::now() + options.grace;
          kill_at = terminate_at + std::chrono::seconds(5);
          if (!workers.empty()) {
            std::fprintf(stderr,
                         "launcher: the other %zu worker(s) get %.0f s to stop, then are "
                         "terminated\n",
                         workers.size(), options.grace.count() / 1000.0);
          }
        }
      }
      continue;
    }
    if (const int signal_number = g_signal; signal_number != 0) {
      g_signal = 0;
      for (const auto& [p, r] : workers) kill(p, signal_number);
    }
    const Clock::time_point now = Clock::now();
    if (now >= kill_at) {
      for (const auto& [p, r] : workers) kill(p, SIGKILL);
      kill_at = Clock::time_point::max();
    } else if (now >= terminate_at) {
      for (const auto& [p, r] : workers) {
        std::fprintf(stderr, "launcher: terminating worker rank %d (pid %d)\n", r,
                     static_cast<int>(p));
        kill(p, SIGTERM);
      }
      terminate_at = Clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return first_failure;
}

}  // namespace moelab
