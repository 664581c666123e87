/* The kernels of one element type, included once per type by kernels.c with these
   defined: S storage type, T compute type, SUFFIX the names' suffix (f32, f64, bf16,
   f16), SQRT the square root in T; VT, L, TSUF the column loops' vector type, lanes and
   compute-type suffix; LD/ST element conversions (generic layouts) and ROW(p, n, buf) ->
   const T* of n values. Names are pasted with CAT (kernels.c): CAT(stats_, SUFFIX) is
   stats_f32 for float32. Every function here is an ordinary C function of that type. */

#include "columns.h"
#include "streamed.h"
#include "narrow.h"
#include "stats.h"
#include "forward.h"
#include "backward.h"
#include "passes.h"

/* (its parameters end here: the next includer defines them again) */
#undef S
#undef T
#undef SUFFIX
#undef SQRT
#undef VT
#undef L
#undef TSUF
#undef LD
#undef ST
#undef ROW
