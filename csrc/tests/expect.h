// A minimal check macro for the ctest programs: report and count failures, keep going.
#pragma once

#include <cstdio>

inline int& expect_failures() {
  static int failures = 0;
  return failures;
}

#define EXPECT(cond)                                                                 \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: EXPECT(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++expect_failures();                                                           \
    }                                                                                \
  } while (0)

// Prints the outcome; returns the process exit status.
inline int expect_report(const char* name) {
  if (expect_failures()) {
    std::fprintf(stderr, "%s: %d check(s) failed\n", name, expect_failures());
    return 1;
  }
  std::printf("%s: all checks passed\n", name);
  return 0;
}
