#include "core/cpu_info.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

namespace moelab {
namespace {

using ::testing::HasSubstr;

// Two logical CPUs as /proc/cpuinfo lists them (abridged).
constexpr char kTwoCores[] =
    "processor\t: 0\n"
    "vendor_id\t: AuthenticAMD\n"
    "cpu family\t: 26\n"
    "model name\t: AMD EPYC 9B45\n"
    "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512_bf16 avx512_vnni\n"
    "\n"
    "processor\t: 1\n"
    "vendor_id\t: AuthenticAMD\n"
    "cpu family\t: 26\n"
    "model name\t: AMD EPYC 9B45\n"
    "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512_bf16 avx512_vnni\n";

TEST(CpuInfoTest, ParsesModelFamilyCountAndFlags) {
  absl::StatusOr<CpuInfo> cpu = ParseCpuInfo(kTwoCores);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(cpu->model, "AMD EPYC 9B45");
  EXPECT_EQ(cpu->family, 26);
  EXPECT_EQ(cpu->logical_cpus, 2);
  EXPECT_TRUE(cpu->avx2);
  EXPECT_TRUE(cpu->avx512f);
  EXPECT_TRUE(cpu->avx512_bf16);
  EXPECT_FALSE(cpu->amx_bf16);
}

TEST(CpuInfoTest, Bf16OutrunsFp32OnAmdWithAvx512Bf16OrWithAmx) {
  absl::StatusOr<CpuInfo> amd = ParseCpuInfo(kTwoCores);
  ASSERT_TRUE(amd.ok());
  EXPECT_EQ(amd->vendor, "AuthenticAMD");
  EXPECT_TRUE(Bf16MatmulOutrunsFp32(*amd));
  CpuInfo intel = *amd;
  intel.vendor = "GenuineIntel";
  EXPECT_FALSE(Bf16MatmulOutrunsFp32(intel));  // AVX512-BF16, no AMX
  intel.amx_bf16 = true;
  EXPECT_TRUE(Bf16MatmulOutrunsFp32(intel));
  amd->avx512_bf16 = false;
  EXPECT_FALSE(Bf16MatmulOutrunsFp32(*amd));
}

TEST(CpuInfoTest, FlagsAreWholeWords) {
  // "avx512_bf16_x" and "xavx2" are not avx512_bf16 and avx2.
  absl::StatusOr<CpuInfo> cpu =
      ParseCpuInfo("processor : 0\nflags : xavx2 avx512_bf16_x amx_bf16 amx_tile\n");
  ASSERT_TRUE(cpu.ok());
  EXPECT_FALSE(cpu->avx2);
  EXPECT_FALSE(cpu->avx512_bf16);
  EXPECT_TRUE(cpu->amx_bf16);
  EXPECT_EQ(cpu->model, "");
  EXPECT_EQ(cpu->family, -1);
}

TEST(CpuInfoTest, NoProcessorIsAnError) {
  EXPECT_FALSE(ParseCpuInfo("").ok());
  EXPECT_FALSE(ParseCpuInfo("model name : X\n").ok());
}

TEST(CpuInfoTest, DescribesTheMachineInOneLine) {
  absl::StatusOr<CpuInfo> cpu = ParseCpuInfo(kTwoCores);
  ASSERT_TRUE(cpu.ok());
  setenv("OPENBLAS_CORETYPE", "Haswell", 1);
  EXPECT_EQ(DescribeCpu(*cpu),
            "AMD EPYC 9B45 (family 26), 2 logical CPUs; AVX2 yes, AVX-512 yes, "
            "AVX512-BF16 yes, AMX-BF16 no; OPENBLAS_CORETYPE=Haswell");
  unsetenv("OPENBLAS_CORETYPE");
  EXPECT_THAT(DescribeCpu(*cpu), HasSubstr("OPENBLAS_CORETYPE=(unset)"));
}

TEST(CpuInfoTest, ThisMachineHasAProcessor) {
  absl::StatusOr<CpuInfo> cpu = ReadCpuInfo();
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_GE(cpu->logical_cpus, 1);
}

}  // namespace
}  // namespace moelab
