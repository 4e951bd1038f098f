#include "core/base/dtype.h"

namespace geops {

bool IsKnownDType(uint8_t d) { return d <= static_cast<uint8_t>(DType::kBFloat16); }

size_t DTypeSize(DType d) {
  switch (d) {
    case DType::kNone: return 1;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
  }
  return 1;
}

const char* DTypeName(DType d) {
  switch (d) {
    case DType::kNone: return "none";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "?";
}

}  // namespace geops
