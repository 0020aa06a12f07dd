// CPU kernels for the LLM's decode step: a few rows of activations against the whole model.
//
// At batch 1 a decode step reads every weight once and does little arithmetic on it, and torch
// spends more time dispatching its ~90 small ops per layer than computing. These kernels fuse a
// layer into eight calls and read 4-bit weights: compiled at first use for the machine's own ISA
// (engine/kernels/build.py), called through ctypes (engine/kernels/ops.py).
//
// Weight layouts:
//   q4: groups of 32 inputs per output row. codes [N, K/32, 16] bytes, byte j holding the code of
//       input j (low nibble) and of input j+16 (high nibble); w = code * scale + low, fp32 scale and
//       low per group. This is GGUF's Q4_1 block, so a model shipped as Q4_1 runs on its own codes.
//   q8: groups of 32 inputs, int8 codes [N, K] and an fp32 scale per group: w = code * scale. This is
//       GGUF's Q8_0 block (SmolLM2's shipped token embedding, which is also its lm_head).
// Activations and accumulators stay fp32: no activation quantization.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>
#include <vector>

namespace {

constexpr int kGroup = 32;
constexpr int kRowBlock = 8;  // activation rows sharing one decoded weight group
constexpr int64_t kTileN = 32;  // output rows per work item

#if defined(__AVX512F__)
inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

template <int R>
void q4_row(const uint8_t* codes, const float* scale, const float* low, const float* x, int64_t K,
            float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  const __m128i nibble = _mm_set1_epi8(0x0F);
  for (int64_t g = 0; g < K / kGroup; g++) {
    __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * 16));
    __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, nibble)));
    __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), nibble)));
    __m512 d = _mm512_set1_ps(scale[g]), m = _mm512_set1_ps(low[g]);
    __m512 w0 = _mm512_fmadd_ps(lo, d, m), w1 = _mm512_fmadd_ps(hi, d, m);
    for (int r = 0; r < R; r++) {
      const float* xg = x + r * K + g * kGroup;
      acc[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xg), acc[r]);
      acc[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xg + 16), acc[r]);
    }
  }
  for (int r = 0; r < R; r++) out[r] = hsum(acc[r]);
}

template <int R>
void q8_row(const int8_t* w, const float* scale, const float* x, int64_t K, float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    __m512 code = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k))));
    __m512 wv = _mm512_mul_ps(code, _mm512_set1_ps(scale[k / kGroup]));
    for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + r * K + k), acc[r]);
  }
  for (int r = 0; r < R; r++) out[r] = hsum(acc[r]);
}

#elif defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 widen8(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }

template <int R>
void q4_row(const uint8_t* codes, const float* scale, const float* low, const float* x, int64_t K,
            float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
  const __m128i nibble = _mm_set1_epi8(0x0F);
  for (int64_t g = 0; g < K / kGroup; g++) {
    __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * 16));
    __m128i lo = _mm_and_si128(bytes, nibble), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble);
    __m256 d = _mm256_set1_ps(scale[g]), m = _mm256_set1_ps(low[g]);
    __m256 w[4] = {_mm256_fmadd_ps(widen8(lo), d, m), _mm256_fmadd_ps(widen8(_mm_srli_si128(lo, 8)), d, m),
                   _mm256_fmadd_ps(widen8(hi), d, m), _mm256_fmadd_ps(widen8(_mm_srli_si128(hi, 8)), d, m)};
    for (int r = 0; r < R; r++) {
      const float* xg = x + r * K + g * kGroup;
      for (int i = 0; i < 4; i++) acc[r] = _mm256_fmadd_ps(w[i], _mm256_loadu_ps(xg + 8 * i), acc[r]);
    }
  }
  for (int r = 0; r < R; r++) out[r] = hsum(acc[r]);
}

template <int R>
void q8_row(const int8_t* w, const float* scale, const float* x, int64_t K, float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k += 8) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k));
    __m256 wv = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), _mm256_set1_ps(scale[k / kGroup]));
    for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * K + k), acc[r]);
  }
  for (int r = 0; r < R; r++) out[r] = hsum(acc[r]);
}

#else  // portable fallback
template <int R>
void q4_row(const uint8_t* codes, const float* scale, const float* low, const float* x, int64_t K,
            float* out) {
  for (int r = 0; r < R; r++) {
    float acc = 0.f;
    for (int64_t g = 0; g < K / kGroup; g++) {
      const float* xg = x + r * K + g * kGroup;
      for (int j = 0; j < 16; j++) {
        uint8_t b = codes[g * 16 + j];
        acc += ((b & 15) * scale[g] + low[g]) * xg[j] + ((b >> 4) * scale[g] + low[g]) * xg[j + 16];
      }
    }
    out[r] = acc;
  }
}

template <int R>
void q8_row(const int8_t* w, const float* scale, const float* x, int64_t K, float* out) {
  for (int r = 0; r < R; r++) {
    float acc = 0.f;
    for (int64_t k = 0; k < K; k++) acc += w[k] * scale[k / kGroup] * x[r * K + k];
    out[r] = acc;
  }
}
#endif

// Calls fn with std::integral_constant<int, rows> (1..kRowBlock), so each block size has its own unrolled loop.
template <typename Fn>
void unrolled(int64_t rows, Fn&& fn) {
  switch (rows) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    default: fn(std::integral_constant<int, kRowBlock>{}); break;
  }
}

// Output rows in tiles of kTileN, split across the threads. Within a tile every block of activation rows
// (L1-sized) runs over all the tile's weight rows (L2-sized) before the next block: at 32 rows the
// activations no longer fit in L1, and streaming them once per output row cost more than the arithmetic.
template <typename Fn>
void by_output_tile(int64_t N, int threads, Fn&& fn) {
  const int64_t tiles = (N + kTileN - 1) / kTileN;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t t = 0; t < tiles; t++) fn(t * kTileN, t * kTileN + kTileN < N ? t * kTileN + kTileN : N);
}

// The activation rows in blocks of up to kRowBlock.
template <typename Fn>
void by_row_block(int64_t rows, Fn&& fn) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    int64_t n = rows - r0 < kRowBlock ? rows - r0 : kRowBlock;
    fn(r0, n);
  }
}

}  // namespace

extern "C" {

// y[M, N] = x[M, K] W^T (+ bias), W in q4 groups. K must be a multiple of 32.
void rt_q4_linear(const uint8_t* codes, const float* scale, const float* low, const float* bias,
                  const float* x, float* y, int64_t M, int64_t N, int64_t K, int threads) {
  const int64_t groups = K / kGroup;
  by_output_tile(N, threads, [&](int64_t n0, int64_t n1) {
    float out[kRowBlock];
    by_row_block(M, [&](int64_t r0, int64_t rows) {
      const float* xr = x + r0 * K;
      for (int64_t n = n0; n < n1; n++) {
        const uint8_t* c = codes + n * groups * 16;
        const float* s = scale + n * groups;
        const float* l = low + n * groups;
        unrolled(rows, [&](auto R) { q4_row<R.value>(c, s, l, xr, K, out); });
        for (int64_t r = 0; r < rows; r++) y[(r0 + r) * N + n] = out[r] + (bias ? bias[n] : 0.f);
      }
    });
  });
}

// y[M, N] = x[M, K] W^T, W in q8 groups. K must be a multiple of 32.
void rt_q8_linear(const int8_t* w, const float* scale, const float* x, float* y, int64_t M, int64_t N,
                  int64_t K, int threads) {
  by_output_tile(N, threads, [&](int64_t n0, int64_t n1) {
    float out[kRowBlock];
    by_row_block(M, [&](int64_t r0, int64_t rows) {
      const float* xr = x + r0 * K;
      for (int64_t n = n0; n < n1; n++) {
        const int8_t* wn = w + n * K;
        const float* sn = scale + n * (K / kGroup);
        unrolled(rows, [&](auto R) { q8_row<R.value>(wn, sn, xr, K, out); });
        for (int64_t r = 0; r < rows; r++) y[(r0 + r) * N + n] = out[r];
      }
    });
  });
}

// h += delta (when delta is given), then out = h / rms(h) * weight, per row of K.
void rt_add_rms_norm(float* h, const float* delta, const float* weight, float eps, float* out, int64_t M,
                     int64_t K) {
  for (int64_t r = 0; r < M; r++) {
    float* hr = h + r * K;
    if (delta) {
      const float* dr = delta + r * K;
#pragma omp simd
      for (int64_t k = 0; k < K; k++) hr[k] += dr[k];
    }
    float sq = 0.f;
#pragma omp simd reduction(+ : sq)
    for (int64_t k = 0; k < K; k++) sq += hr[k] * hr[k];
    const float inv = 1.f / sqrtf(sq / K + eps);
    float* o = out + r * K;
#pragma omp simd
    for (int64_t k = 0; k < K; k++) o[k] = weight[k] * (hr[k] * inv);
  }
}

// Rotary on the q and k heads of each fused qkv row ([M, (H + 2 KVH) * D]), in place (Llama's
// rotate-half form, cos/sin rows [M, D]); then k and v go to cache slot slots[m] ([S, KVH, D]).
void rt_rope_store(float* qkv, int64_t M, int64_t H, int64_t KVH, int64_t D, const float* cos,
                   const float* sin, const int64_t* slots, float* k_cache, float* v_cache) {
  const int64_t half = D / 2, row = (H + 2 * KVH) * D;
  for (int64_t m = 0; m < M; m++) {
    float* r = qkv + m * row;
    const float* c = cos + m * D;
    const float* s = sin + m * D;
    for (int64_t head = 0; head < H + KVH; head++) {
      float* x = r + head * D;
      for (int64_t i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = b * c[i + half] + a * s[i + half];
      }
    }
    memcpy(k_cache + slots[m] * KVH * D, r + H * D, KVH * D * sizeof(float));
    memcpy(v_cache + slots[m] * KVH * D, r + (H + KVH) * D, KVH * D * sizeof(float));
  }
}

// One query token per sequence against its cached context: out[b, h] = softmax(q k^T * scale) v over
// the slots ctx_slots[b, t] where mask[b, t]. q is read from the fused qkv rows (row_stride floats).
void rt_decode_attention(const float* qkv, int64_t row_stride, const float* k_cache, const float* v_cache,
                         const int64_t* ctx_slots, const uint8_t* mask, int64_t B, int64_t T, int64_t H,
                         int64_t KVH, int64_t D, float scale, float* out, int threads) {
  const int64_t group = H / KVH;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> p(T);
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < B; b++) {
      for (int64_t h = 0; h < H; h++) {
        const float* q = qkv + b * row_stride + h * D;
        const int64_t kv = h / group;
        float best = -INFINITY;
        for (int64_t t = 0; t < T; t++) {
          if (!mask[b * T + t]) continue;  // never read: the second pass skips it too
          const float* k = k_cache + (ctx_slots[b * T + t] * KVH + kv) * D;
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < D; i++) dot += q[i] * k[i];
          p[t] = dot * scale;
          best = p[t] > best ? p[t] : best;
        }
        float* o = out + (b * H + h) * D;
        for (int64_t i = 0; i < D; i++) o[i] = 0.f;
        float total = 0.f;
        for (int64_t t = 0; t < T; t++) {
          if (!mask[b * T + t]) continue;
          const float e = expf(p[t] - best);
          total += e;
          const float* v = v_cache + (ctx_slots[b * T + t] * KVH + kv) * D;
#pragma omp simd
          for (int64_t i = 0; i < D; i++) o[i] += e * v[i];
        }
        const float inv = 1.f / total;
        for (int64_t i = 0; i < D; i++) o[i] *= inv;
      }
    }
  }
}

// out[M, I] = silu(gu[:, :I]) * gu[:, I:] for the fused gate/up rows gu[M, 2I].
void rt_silu_mul(const float* gu, float* out, int64_t M, int64_t I, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (M > 1)
  for (int64_t r = 0; r < M; r++) {
    const float* g = gu + r * 2 * I;
    const float* u = g + I;
    float* o = out + r * I;
#pragma omp simd
    for (int64_t i = 0; i < I; i++) o[i] = g[i] / (1.f + expf(-g[i])) * u[i];
  }
}

}  // extern "C"
