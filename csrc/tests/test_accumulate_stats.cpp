// C++ test of easyhard::accumulate_stats through the dispatcher (built by CMake, run by ctest):
// hand-computed values, forgetting events, duplicate indices and refused input on the CPU kernel,
// on every instruction-set path this CPU runs (EASYHARD_CPU_CAPABILITY), and the paths agreeing.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../cpu/cpu_capability.h"
#include "expect.h"

namespace {

struct State {
  at::Tensor counts, sums, flags, errors;
  explicit State(int64_t n)
      : counts(at::zeros({n, 4}, at::kInt)),
        sums(at::zeros({n, 5}, at::kFloat)),
        flags(at::zeros({n}, at::kInt)),
        errors(at::tensor({int64_t(0), int64_t(-1)}, at::kLong)) {}
};

void call(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& indices, State& s) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("easyhard::accumulate_stats", "")
                       .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&)>();
  op.call(logits, labels, indices, s.counts, s.sums, s.flags, s.errors);
}

at::Tensor longs(std::initializer_list<int64_t> v) {
  return at::tensor(std::vector<int64_t>(v), at::kLong);
}

bool near(float a, float b) {
  return std::fabs(a - b) <= 1e-5f * (1.f + std::fabs(b));
}

void test_values() {
  State s(2);
  auto logits = at::tensor({1.f, 3.f, 0.5f, 2.f, 2.f, -1.f}, at::kFloat).view({2, 3});
  call(logits, longs({1, 1}), longs({0, 1}), s);
  auto p = at::softmax(logits, 1);
  auto c = s.counts.accessor<int32_t, 2>();
  auto m = s.sums.accessor<float, 2>();
  EXPECT(c[0][0] == 1 && c[0][1] == 1);  // correct
  EXPECT(c[1][0] == 1 && c[1][1] == 0);  // tie resolved to the first maximum (class 0)
  EXPECT(near(m[0][0], p[0][1].item<float>()));
  EXPECT(near(m[0][2], 2.f));                               // margin 3 - 1
  EXPECT(near(m[0][3], -std::log(p[0][1].item<float>())));  // cross-entropy
  EXPECT(near(m[1][2], 0.f));                               // tie: margin 0
  EXPECT(s.flags[0].item<int32_t>() == 1 && s.flags[1].item<int32_t>() == 0);
}

void test_forgetting_and_duplicates() {
  State s(1);
  auto right = at::tensor({2.f, 0.f}, at::kFloat).view({1, 2});
  auto wrong = at::tensor({0.f, 2.f}, at::kFloat).view({1, 2});
  for (const auto& l : {right, right, wrong, right, wrong}) call(l, longs({0}), longs({0}), s);
  auto c = s.counts.accessor<int32_t, 2>();
  EXPECT(c[0][0] == 5 && c[0][1] == 3 && c[0][2] == 2);
  State d(1);
  d.flags.fill_(1);
  call(at::cat({right, wrong, right}), longs({0, 0, 0}), longs({0, 0, 0}), d);
  auto dc = d.counts.accessor<int32_t, 2>();
  EXPECT(dc[0][0] == 3 && dc[0][1] == 2 && dc[0][2] == 1);  // one observation: one event
  EXPECT(d.flags[0].item<int32_t>() == 0);
}

void test_refused() {
  State s(4);
  bool threw = false;
  try {
    call(at::randn({2, 3}), longs({0, 3}), longs({0, 1}), s);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("labels[1] = 3 is outside [0, 3)") != std::string::npos;
  }
  EXPECT(threw);
  EXPECT(s.counts.sum().item<int64_t>() == 0);
  threw = false;
  try {
    call(at::randn({2, 3}), longs({0, 1}), longs({0, 9}), s);
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("indices[1] = 9 is outside [0, 4)") != std::string::npos;
  }
  EXPECT(threw);
}

// Random 64 x 1000 logits on `path` and on the baseline: counts equal, sums to rounding.
void test_agrees_with_baseline(const char* path) {
  at::manual_seed(0);
  auto logits = at::randn({64, 1000}) * 3;
  auto labels = at::randint(1000, {64}, at::kLong);
  auto indices = at::arange(64, at::kLong);
  State here(64), base(64);
  call(logits, labels, indices, here);
  setenv("EASYHARD_CPU_CAPABILITY", "baseline", 1);
  call(logits, labels, indices, base);
  setenv("EASYHARD_CPU_CAPABILITY", path, 1);
  EXPECT(at::equal(here.counts, base.counts));
  EXPECT(at::allclose(here.sums, base.sums, 1e-6, 1e-6));
}

}  // namespace

int main() {
  for (const auto p : easyhard::cpu::runnable_paths()) {
    const char* name = easyhard::cpu::path_name(p);
    setenv("EASYHARD_CPU_CAPABILITY", name, 1);
    EXPECT(easyhard::cpu::selected_path() == p);
    test_values();
    test_forgetting_and_duplicates();
    test_refused();
    test_agrees_with_baseline(name);
    std::printf("test_accumulate_stats: path %s checked\n", name);
  }
  return expect_report("test_accumulate_stats");
}
