//===- VecMath.cpp - libmvec's AVX-512 exp behind a pointer interface -----===//
//
// glibc libmvec's exp of 8 doubles (_ZGVeN8v_exp, the function GCC calls
// when it vectorizes exp) takes and returns a __m512d in zmm0. A caller
// passes it there only where its translation unit enables AVX-512: clang
// takes the argument ABI from the file's flags, not from a declaration's or
// caller's target attribute, and passed the vector on the stack (an aligned
// store to a stack slot that was not 64-byte aligned: a SEGV in the
// sanitizer build; where the slot happened to be aligned, the value reached
// zmm0 by luck). This file alone is compiled with -mavx512f (CMake) and is
// called only from AVX-512 code paths; the boundary passes memory.
//
//===----------------------------------------------------------------------===//
#include "VecMath.h"

#include <immintrin.h>

extern "C" __m512d _ZGVeN8v_exp(__m512d);

namespace moert::cpu {

void exp8(const double *in, double *out) {
  _mm512_storeu_pd(out, _ZGVeN8v_exp(_mm512_loadu_pd(in)));
}

} // namespace moert::cpu
