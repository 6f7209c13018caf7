// C++ test of easyhard::topk_select through the dispatcher (built by CMake, run by ctest): ties by
// index, NaN last, per-class budgets, refused budgets.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "expect.h"

namespace {

at::Tensor call(const at::Tensor& scores, int64_t k, bool largest,
                const c10::optional<at::Tensor>& labels = c10::nullopt,
                const c10::optional<at::Tensor>& budgets = c10::nullopt) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("easyhard::topk_select", "")
          .typed<at::Tensor(const at::Tensor&, int64_t, bool, const c10::optional<at::Tensor>&,
                            const c10::optional<at::Tensor>&)>();
  return op.call(scores, k, largest, labels, budgets);
}

std::vector<int64_t> vec(const at::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

at::Tensor longs(std::vector<int64_t> v) {
  return at::tensor(v, at::kLong);
}

}  // namespace

int main() {
  const float nan = std::nanf("");
  auto s = at::tensor(std::vector<float>{1.f, nan, 3.f, 3.f, -0.f, 0.f, 3.f}, at::kFloat);
  EXPECT((vec(call(s, 2, true)) == std::vector<int64_t>{2, 3}));      // ties: smaller index
  EXPECT((vec(call(s, 3, false)) == std::vector<int64_t>{0, 4, 5}));  // -0.0 == 0.0
  EXPECT((vec(call(s, 6, false)) == std::vector<int64_t>{0, 2, 3, 4, 5, 6}));  // NaN last
  auto labels = longs({0, 1, 1, 0, 1, 0, 1});
  EXPECT((vec(call(s, 3, true, labels, longs({1, 2}))) == std::vector<int64_t>{2, 3, 6}));
  bool threw = false;
  try {
    call(s, 5, true, labels, longs({4, 1}));
  } catch (const c10::Error& e) {
    threw = std::string(e.what()).find("budgets[0] = 4 exceeds the 3 examples of class 0") !=
            std::string::npos;
  }
  EXPECT(threw);
  return expect_report("test_topk_select");
}
