/* The link's hot path in C: Reed-Solomon over GF(2^8) and AES-256-GCM sealing.
 *
 * Python keeps the protocol's logic (framing, blocks, sessions, loss accounting); this
 * module does the per-byte work, a whole interleave group per call on the sender, so
 * the per-datagram cost is the cipher and the code, not the interpreter
 * (docs/performance.md). Wire format: docs/protocol.md.
 *
 * Erasure code: systematic, MDS. Repair symbol i (0 <= i < r) of a block of k data
 * symbols D_j is  R_i = sum_j C[i][j] * D_j  with the Cauchy matrix
 *     C[i][j] = (k ^ j) / ((k + i) ^ j)      in GF(2^8), polynomial 0x11d,
 * that is 1 / (x_i + y_j) with x_i = k + i, y_j = j, each column scaled so the first
 * repair symbol is the plain XOR of the data. Every square submatrix of a Cauchy
 * matrix is invertible, so any k of the k + r symbols rebuild the block.
 *
 * Region multiply: the split-nibble table method (c * x = T_lo[x & 15] ^ T_hi[x >> 4]),
 * 16 or 32 bytes per shuffle instruction: PSHUFB (SSSE3/AVX2) on x86-64, TBL (NEON) on
 * arm64, a 64 KiB product table elsewhere.
 *
 * AES-256-GCM through OpenSSL's EVP with one context per direction, keyed once: only
 * the nonce changes per datagram. The nonce is 4 zero bytes + the header's 64-bit
 * packet number; the header is the associated data. The GIL is released while a group
 * is encoded and sealed, so the daemon's other threads run meanwhile; an Aead object
 * refuses to be used by two threads at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_pymodule.h"

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

/* ---- the datagram header: the one definition of the wire layout ---------------
 * Exported as module constants (OFFSET_*, HEADER_SIZE, ...): appliance/protocol/wire.py
 * builds and checks its struct from them, and docs/protocol.md gives the same table.
 * All integers big-endian. */
#define MAGIC_0 0xdd
#define MAGIC_1 0xc1
#define WIRE_VERSION 3
#define OFFSET_MAGIC 0          /* 2 bytes */
#define OFFSET_VERSION 2        /* 1 */
#define OFFSET_TYPE 3           /* 1: low 4 bits type, bit 7 encrypted */
#define OFFSET_KEY_ID 4         /* 2 */
#define OFFSET_CHANNEL_ID 6     /* 2 */
#define OFFSET_SESSION_ID 8     /* 16: epoch (u64, ms) then 64 random bits */
#define OFFSET_PACKET_NUMBER 24 /* 8: the GCM nonce, never repeated in a session */
#define OFFSET_BLOCK_SEQ 32     /* 6 */
#define OFFSET_SYMBOL_INDEX 38  /* 1 */
#define OFFSET_K 39             /* 1 */
#define OFFSET_N 40             /* 1 */
#define HEADER_SIZE 41
#define SESSION_ID_SIZE 16
#define BLOCK_SEQ_SIZE 6
#define TAG_SIZE 16
#define OVERHEAD (HEADER_SIZE + TAG_SIZE)
#define MAX_SYMBOLS 255
#define FLAG_ENCRYPTED 0x80
#define TYPE_MASK 0x0F
#define TYPE_DATA 1
#define TYPE_HEARTBEAT 2

/* Drop reasons the Aead methods return in place of a datagram (interned str objects:
 * the decoder counts them by name, see DROP_REASONS in decoder.py). */
static PyObject *REASON_AUTH, *REASON_MALFORMED;

/* A block's geometry, in one place for every entry point (the receiver's header check,
 * seal_group, rs_encode, rs_decode): k data symbols (k >= 1) of n in all, n >= k, and
 * n <= MAX_SYMBOLS (a header's one byte holds that by itself). */
static inline int block_geometry_ok(long long k, long long n)
{
    return k >= 1 && n >= k && n <= MAX_SYMBOLS;
}

/* The header-validity rule of a data symbol: its block's geometry, and an index below n. */
static inline int geometry_ok(const uint8_t *h)
{
    return block_geometry_ok(h[OFFSET_K], h[OFFSET_N]) && h[OFFSET_SYMBOL_INDEX] < h[OFFSET_N];
}

static inline int magic_ok(const uint8_t *h)
{
    return h[OFFSET_MAGIC] == MAGIC_0 && h[OFFSET_MAGIC + 1] == MAGIC_1;
}

/* ---- GF(2^8) -------------------------------------------------------------- */

static uint8_t gf_exp[512];
static uint8_t gf_log[256];
static uint8_t gf_mul_table[256][256];
static uint8_t gf_nib_lo[256][16]; /* c * x for x < 16 */
static uint8_t gf_nib_hi[256][16]; /* c * (x << 4) */

static void gf_init(void)
{
    unsigned x = 1;
    for (int i = 0; i < 255; i++) {
        gf_exp[i] = (uint8_t)x;
        gf_log[x] = (uint8_t)i;
        x <<= 1;
        if (x & 0x100)
            x ^= 0x11d;
    }
    for (int i = 255; i < 512; i++)
        gf_exp[i] = gf_exp[i - 255];
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++)
            gf_mul_table[a][b] = (a && b) ? gf_exp[gf_log[a] + gf_log[b]] : 0;
    for (int c = 0; c < 256; c++)
        for (int i = 0; i < 16; i++) {
            gf_nib_lo[c][i] = gf_mul_table[c][i];
            gf_nib_hi[c][i] = gf_mul_table[c][i << 4];
        }
}

static inline uint8_t gf_mul(uint8_t a, uint8_t b) { return gf_mul_table[a][b]; }

static inline uint8_t gf_inv(uint8_t a) /* a != 0 */
{
    return gf_exp[255 - gf_log[a]];
}

/* Entry (i, j) of the repair matrix of a block of k data symbols. */
static inline uint8_t cauchy(int k, int i, int j)
{
    return gf_mul((uint8_t)(k ^ j), gf_inv((uint8_t)((k + i) ^ j)));
}

/* ---- region multiply-accumulate: dst ^= c * src ----------------------------- */

static void mul_xor_table(uint8_t *dst, const uint8_t *src, uint8_t c, size_t n)
{
    const uint8_t *t = gf_mul_table[c];
    for (size_t i = 0; i < n; i++)
        dst[i] ^= t[src[i]];
}

static void xor_region(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t a, b;
        memcpy(&a, dst + i, 8);
        memcpy(&b, src + i, 8);
        a ^= b;
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++)
        dst[i] ^= src[i];
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void mul_xor_avx2(uint8_t *dst, const uint8_t *src,
                                                         uint8_t c, size_t n)
{
    const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)gf_nib_lo[c]));
    const __m256i hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)gf_nib_hi[c]));
    const __m256i mask = _mm256_set1_epi8(0x0f);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i p = _mm256_xor_si256(
            _mm256_shuffle_epi8(lo, _mm256_and_si256(x, mask)),
            _mm256_shuffle_epi8(hi, _mm256_and_si256(_mm256_srli_epi64(x, 4), mask)));
        __m256i d = _mm256_loadu_si256((const __m256i *)(dst + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(d, p));
    }
    mul_xor_table(dst + i, src + i, c, n - i);
}

__attribute__((target("ssse3"))) static void mul_xor_ssse3(uint8_t *dst, const uint8_t *src,
                                                           uint8_t c, size_t n)
{
    const __m128i lo = _mm_loadu_si128((const __m128i *)gf_nib_lo[c]);
    const __m128i hi = _mm_loadu_si128((const __m128i *)gf_nib_hi[c]);
    const __m128i mask = _mm_set1_epi8(0x0f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i p = _mm_xor_si128(_mm_shuffle_epi8(lo, _mm_and_si128(x, mask)),
                                  _mm_shuffle_epi8(hi, _mm_and_si128(_mm_srli_epi64(x, 4), mask)));
        __m128i d = _mm_loadu_si128((const __m128i *)(dst + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(d, p));
    }
    mul_xor_table(dst + i, src + i, c, n - i);
}
#elif defined(__aarch64__)
static void mul_xor_neon(uint8_t *dst, const uint8_t *src, uint8_t c, size_t n)
{
    const uint8x16_t lo = vld1q_u8(gf_nib_lo[c]);
    const uint8x16_t hi = vld1q_u8(gf_nib_hi[c]);
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint8x16_t x = vld1q_u8(src + i);
        uint8x16_t p = veorq_u8(vqtbl1q_u8(lo, vandq_u8(x, mask)), vqtbl1q_u8(hi, vshrq_n_u8(x, 4)));
        vst1q_u8(dst + i, veorq_u8(vld1q_u8(dst + i), p));
    }
    mul_xor_table(dst + i, src + i, c, n - i);
}
#endif

typedef void (*mul_xor_fn)(uint8_t *, const uint8_t *, uint8_t, size_t);
static mul_xor_fn mul_xor_simd = mul_xor_table;
static const char *simd_name = "table";

/* The widest kernel the CPU has; DDC_NATIVE_SIMD=table (or ssse3) asks for a narrower
 * one, so the tests prove every kernel on a machine that has them all. */
static void pick_simd(void)
{
    const char *want = getenv("DDC_NATIVE_SIMD");
    if (want && !strcmp(want, "table"))
        return;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && !(want && !strcmp(want, "ssse3"))) {
        mul_xor_simd = mul_xor_avx2;
        simd_name = "avx2";
    } else if (__builtin_cpu_supports("ssse3")) {
        mul_xor_simd = mul_xor_ssse3;
        simd_name = "ssse3";
    }
#elif defined(__aarch64__)
    mul_xor_simd = mul_xor_neon;
    simd_name = "neon";
#endif
}

static inline void mul_xor(uint8_t *dst, const uint8_t *src, uint8_t c, size_t n)
{
    if (c == 1)
        xor_region(dst, src, n);
    else if (c)
        mul_xor_simd(dst, src, c, n);
}

/* Repair symbols of one block: data is k symbols of size s end to end; repair gets r. */
static void rs_encode_block(const uint8_t *data, int k, int r, size_t s, uint8_t *repair)
{
    memset(repair, 0, (size_t)r * s);
    /* Data symbol outer: each is read once from memory, the r repair symbols stay hot. */
    for (int j = 0; j < k; j++)
        for (int i = 0; i < r; i++)
            mul_xor(repair + (size_t)i * s, data + (size_t)j * s, cauchy(k, i, j), s);
}

/* Invert the e x e matrix m in place (Gauss-Jordan). Returns 0, or -1 if singular
 * (never for a Cauchy submatrix; checked all the same). */
static int gf_invert(uint8_t *m, int e)
{
    uint8_t *inv = calloc((size_t)e * e, 1);
    if (!inv)
        return -1;
    for (int i = 0; i < e; i++)
        inv[i * e + i] = 1;
    for (int col = 0; col < e; col++) {
        int piv = col;
        while (piv < e && !m[piv * e + col])
            piv++;
        if (piv == e) {
            free(inv);
            return -1;
        }
        if (piv != col)
            for (int j = 0; j < e; j++) {
                uint8_t t = m[col * e + j];
                m[col * e + j] = m[piv * e + j];
                m[piv * e + j] = t;
                t = inv[col * e + j];
                inv[col * e + j] = inv[piv * e + j];
                inv[piv * e + j] = t;
            }
        uint8_t f = gf_inv(m[col * e + col]);
        for (int j = 0; j < e; j++) {
            m[col * e + j] = gf_mul(m[col * e + j], f);
            inv[col * e + j] = gf_mul(inv[col * e + j], f);
        }
        for (int row = 0; row < e; row++) {
            uint8_t g = m[row * e + col];
            if (row == col || !g)
                continue;
            for (int j = 0; j < e; j++) {
                m[row * e + j] ^= gf_mul(g, m[col * e + j]);
                inv[row * e + j] ^= gf_mul(g, inv[col * e + j]);
            }
        }
    }
    memcpy(m, inv, (size_t)e * e);
    free(inv);
    return 0;
}

/* ---- AES-256-GCM ------------------------------------------------------------ */

static void nonce_of(const uint8_t *header, uint8_t nonce[12])
{
    memset(nonce, 0, 4);
    memcpy(nonce + 4, header + OFFSET_PACKET_NUMBER, 8);
}

/* out gets len bytes of (cipher or plain) text and the 16-byte tag. */
static int gcm_seal(EVP_CIPHER_CTX *ctx, const uint8_t *header, const uint8_t *in, size_t len,
                    uint8_t *out)
{
    uint8_t nonce[12];
    int outl;
    nonce_of(header, nonce);
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &outl, header, HEADER_SIZE) != 1)
        return -1;
    if (header[3] & FLAG_ENCRYPTED) {
        if (len && EVP_EncryptUpdate(ctx, out, &outl, in, (int)len) != 1)
            return -1;
    } else {
        if (len && EVP_EncryptUpdate(ctx, NULL, &outl, in, (int)len) != 1)
            return -1;
        memmove(out, in, len);
    }
    if (EVP_EncryptFinal_ex(ctx, out + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, out + len) != 1)
        return -1;
    return 0;
}

/* datagram = header | body | tag; out gets the plain body. Returns 1 if authentic. */
static int gcm_open(EVP_CIPHER_CTX *ctx, const uint8_t *datagram, size_t len, uint8_t *out)
{
    uint8_t nonce[12], scratch[16];
    int outl;
    size_t body = len - OVERHEAD;
    nonce_of(datagram, nonce);
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &outl, datagram, HEADER_SIZE) != 1)
        return 0;
    if (datagram[3] & FLAG_ENCRYPTED) {
        if (body && EVP_DecryptUpdate(ctx, out, &outl, datagram + HEADER_SIZE, (int)body) != 1)
            return 0;
    } else {
        if (body && EVP_DecryptUpdate(ctx, NULL, &outl, datagram + HEADER_SIZE, (int)body) != 1)
            return 0;
        memcpy(out, datagram + HEADER_SIZE, body);
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_SIZE,
                            (void *)(datagram + len - TAG_SIZE)) != 1)
        return 0;
    return EVP_DecryptFinal_ex(ctx, scratch, &outl) == 1;
}

/* ---- header --------------------------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

static void pack_header(uint8_t *h, uint8_t type_byte, unsigned key_id, unsigned channel_id,
                        const uint8_t *session_id, uint64_t packet_number, uint64_t block_seq,
                        unsigned index, unsigned k, unsigned n)
{
    h[OFFSET_MAGIC] = MAGIC_0;
    h[OFFSET_MAGIC + 1] = MAGIC_1;
    h[OFFSET_VERSION] = WIRE_VERSION;
    h[OFFSET_TYPE] = type_byte;
    put_be(h + OFFSET_KEY_ID, key_id, 2);
    put_be(h + OFFSET_CHANNEL_ID, channel_id, 2);
    memcpy(h + OFFSET_SESSION_ID, session_id, SESSION_ID_SIZE);
    put_be(h + OFFSET_PACKET_NUMBER, packet_number, 8);
    put_be(h + OFFSET_BLOCK_SEQ, block_seq, BLOCK_SEQ_SIZE);
    h[OFFSET_SYMBOL_INDEX] = (uint8_t)index;
    h[OFFSET_K] = (uint8_t)k;
    h[OFFSET_N] = (uint8_t)n;
}

/* The 128-bit session id at h + OFFSET_SESSION_ID as a Python int. */
static PyObject *session_id_int(const uint8_t *h)
{
    PyObject *hi = PyLong_FromUnsignedLongLong(get_be(h + OFFSET_SESSION_ID, 8));
    PyObject *lo = PyLong_FromUnsignedLongLong(get_be(h + OFFSET_SESSION_ID + 8, 8));
    PyObject *sixty_four = PyLong_FromLong(64);
    PyObject *shifted = hi && sixty_four ? PyNumber_Lshift(hi, sixty_four) : NULL;
    PyObject *out = shifted && lo ? PyNumber_Or(shifted, lo) : NULL;
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(sixty_four);
    Py_XDECREF(shifted);
    return out;
}

/* ---- the Aead type ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    int busy; /* a thread is inside with the GIL released */
} AeadObject;

static int Aead_init(AeadObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", NULL};
    Py_buffer key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*", kwlist, &key))
        return -1;
    if (key.len != 32) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "AES-256 key must be 32 bytes, not %zd", key.len);
        return -1;
    }
    if (self->enc || self->dec) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_RuntimeError, "Aead is already keyed");
        return -1;
    }
    self->enc = EVP_CIPHER_CTX_new();
    self->dec = EVP_CIPHER_CTX_new();
    int ok = self->enc && self->dec &&
             EVP_EncryptInit_ex(self->enc, EVP_aes_256_gcm(), NULL, key.buf, NULL) == 1 &&
             EVP_DecryptInit_ex(self->dec, EVP_aes_256_gcm(), NULL, key.buf, NULL) == 1;
    PyBuffer_Release(&key);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-256-GCM");
        return -1;
    }
    return 0;
}

static void Aead_dealloc(AeadObject *self)
{
    EVP_CIPHER_CTX_free(self->enc);
    EVP_CIPHER_CTX_free(self->dec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int enter(AeadObject *self)
{
    if (!self->enc) {
        PyErr_SetString(PyExc_RuntimeError, "Aead is not keyed");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Aead used by two threads at once");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(Aead_seal_doc,
"seal(header, payload) -> bytes\n\n"
"header | payload (encrypted if the header's type byte has the encrypted flag) | tag.\n"
"The nonce is the header's packet number.");

static PyObject *Aead_seal(AeadObject *self, PyObject *args)
{
    Py_buffer header, payload;
    if (enter(self) < 0 || !PyArg_ParseTuple(args, "y*y*", &header, &payload))
        return NULL;
    PyObject *out = NULL;
    if (header.len != HEADER_SIZE) {
        PyErr_Format(PyExc_ValueError, "header must be %d bytes, not %zd", HEADER_SIZE,
                     header.len);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, header.len + payload.len + TAG_SIZE);
    if (!out)
        goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    memcpy(o, header.buf, HEADER_SIZE);
    if (gcm_seal(self->enc, o, payload.buf, (size_t)payload.len, o + HEADER_SIZE) < 0) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_RuntimeError, "AES-GCM seal failed");
    }
done:
    PyBuffer_Release(&header);
    PyBuffer_Release(&payload);
    return out;
}

PyDoc_STRVAR(Aead_open_doc,
"open(datagram, header_type) -> (header, payload), None or \"malformed\"\n\n"
"None if the tag does not verify; \"malformed\" if it verifies but the packet type is\n"
"unknown or a data symbol's geometry (k, n, index) is impossible. header_type is a\n"
"tuple subclass of 10 fields: packet_type, encrypted, key_id, channel_id, session_id,\n"
"packet_number, block_seq, symbol_index, k, n. The caller has checked the length\n"
"(>= OVERHEAD), the magic and the version.");

static PyObject *Aead_open(AeadObject *self, PyObject *args)
{
    Py_buffer dg;
    PyTypeObject *header_type;
    if (enter(self) < 0 || !PyArg_ParseTuple(args, "y*O!", &dg, &PyType_Type, &header_type))
        return NULL;
    PyObject *result = NULL, *payload = NULL, *header = NULL;
    if (dg.len < OVERHEAD) {
        PyErr_Format(PyExc_ValueError, "datagram of %zd bytes is shorter than %d", dg.len,
                     OVERHEAD);
        goto done;
    }
    if (!PyType_IsSubtype(header_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "header_type must be a tuple subclass");
        goto done;
    }
    const uint8_t *d = dg.buf;
    payload = PyBytes_FromStringAndSize(NULL, dg.len - OVERHEAD);
    if (!payload)
        goto done;
    if (!gcm_open(self->dec, d, (size_t)dg.len, (uint8_t *)PyBytes_AS_STRING(payload))) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    int type = d[OFFSET_TYPE] & TYPE_MASK;
    if ((type != TYPE_DATA && type != TYPE_HEARTBEAT) || (type == TYPE_DATA && !geometry_ok(d))) {
        result = Py_NewRef(REASON_MALFORMED);
        goto done;
    }
    header = header_type->tp_alloc(header_type, 10);
    if (!header)
        goto done;
    PyObject *items[10] = {
        PyLong_FromLong(type),
        PyBool_FromLong(d[OFFSET_TYPE] & FLAG_ENCRYPTED),
        PyLong_FromLong((long)get_be(d + OFFSET_KEY_ID, 2)),
        PyLong_FromLong((long)get_be(d + OFFSET_CHANNEL_ID, 2)),
        session_id_int(d),
        PyLong_FromUnsignedLongLong(get_be(d + OFFSET_PACKET_NUMBER, 8)),
        PyLong_FromUnsignedLongLong(get_be(d + OFFSET_BLOCK_SEQ, BLOCK_SEQ_SIZE)),
        PyLong_FromLong(d[OFFSET_SYMBOL_INDEX]),
        PyLong_FromLong(d[OFFSET_K]),
        PyLong_FromLong(d[OFFSET_N]),
    };
    int failed = 0;
    for (int i = 0; i < 10; i++) {
        if (!items[i])
            failed = 1;
        PyTuple_SET_ITEM(header, i, items[i] ? items[i] : Py_NewRef(Py_None));
    }
    if (failed)
        goto done;
    result = PyTuple_Pack(2, header, payload);
done:
    Py_XDECREF(header);
    Py_XDECREF(payload);
    PyBuffer_Release(&dg);
    return result;
}

PyDoc_STRVAR(Aead_open_data_doc,
"open_data(datagrams, key_id, session_id, type_byte) -> list\n\n"
"The receiver's fast path over one receive call's datagrams. session_id: the 16 bytes of\n"
"the current session; type_byte: data with the configured mode's flag. The cheapest\n"
"rejections come first and cost no cipher: a datagram shorter than a header and tag, or\n"
"without the magic, becomes \"malformed\". A data datagram of this key id, session and\n"
"mode is then opened: a bad tag becomes \"auth\", an impossible geometry or one that\n"
"contradicts its block's \"malformed\"; the rest is gathered by block:\n"
"(channel_id, block_seq, k, n, symbol_size, [(index, payload), ...]). Everything else\n"
"(heartbeats, other sessions, keys, modes or versions) is returned as it is, for the\n"
"general path, in its place: a block's symbols are only gathered between two such\n"
"datagrams, so the order of everything but data symbols of the same run is kept.");

#define MAX_GROUPS 64

typedef struct {
    uint64_t seq;
    unsigned channel_id, k, n;
    Py_ssize_t size;
    PyObject *pairs; /* borrowed: owned by the group tuple in the output list */
} OpenGroup;

static PyObject *Aead_open_data(AeadObject *self, PyObject *args)
{
    PyObject *datagrams;
    unsigned key_id, type_byte;
    Py_buffer session;
    if (enter(self) < 0 || !PyArg_ParseTuple(args, "O!Iy*I", &PyList_Type, &datagrams, &key_id,
                                             &session, &type_byte))
        return NULL;
    if (session.len != SESSION_ID_SIZE) {
        PyErr_Format(PyExc_ValueError, "session id must be %d bytes, not %zd", SESSION_ID_SIZE,
                     session.len);
        PyBuffer_Release(&session);
        return NULL;
    }
    uint8_t want_key[2], want_session[SESSION_ID_SIZE];
    put_be(want_key, key_id, 2);
    memcpy(want_session, session.buf, SESSION_ID_SIZE);
    PyBuffer_Release(&session);
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    OpenGroup groups[MAX_GROUPS];
    int ngroups = 0;
    Py_ssize_t count = PyList_GET_SIZE(datagrams);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(datagrams, i);
        const uint8_t *d = NULL;
        Py_ssize_t len = 0;
        if (PyBytes_Check(item)) {
            d = (const uint8_t *)PyBytes_AS_STRING(item);
            len = PyBytes_GET_SIZE(item);
        }
        PyObject *verdict = NULL; /* a drop reason, or NULL: gathered or general path */
        int fast = 0;
        if (!d || len < OVERHEAD || !magic_ok(d))
            verdict = REASON_MALFORMED;
        else
            fast = d[OFFSET_VERSION] == WIRE_VERSION && d[OFFSET_TYPE] == type_byte &&
                   !memcmp(d + OFFSET_KEY_ID, want_key, 2) &&
                   !memcmp(d + OFFSET_SESSION_ID, want_session, SESSION_ID_SIZE);
        PyObject *payload = NULL;
        OpenGroup *g = NULL;
        if (fast) {
            payload = PyBytes_FromStringAndSize(NULL, len - OVERHEAD);
            if (!payload)
                goto fail;
            if (!gcm_open(self->dec, d, (size_t)len, (uint8_t *)PyBytes_AS_STRING(payload)))
                verdict = REASON_AUTH;
            else if (!geometry_ok(d))
                verdict = REASON_MALFORMED;
            else {
                uint64_t seq = get_be(d + OFFSET_BLOCK_SEQ, BLOCK_SEQ_SIZE);
                unsigned channel_id = (unsigned)get_be(d + OFFSET_CHANNEL_ID, 2);
                Py_ssize_t size = len - OVERHEAD;
                for (int j = 0; j < ngroups && !g; j++)
                    if (groups[j].seq == seq)
                        g = &groups[j];
                if (g && (g->channel_id != channel_id || g->k != d[OFFSET_K] ||
                          g->n != d[OFFSET_N] || g->size != size)) {
                    verdict = REASON_MALFORMED; /* authentic, yet contradicts its block */
                    g = NULL;
                } else if (!g) {
                    if (ngroups == MAX_GROUPS)
                        ngroups = 0; /* start a new run; the order across runs is kept */
                    g = &groups[ngroups];
                    *g = (OpenGroup){seq, channel_id, d[OFFSET_K], d[OFFSET_N], size, NULL};
                }
            }
            if (verdict)
                Py_CLEAR(payload);
        }
        if (!g) {
            if (PyList_Append(out, verdict ? verdict : item) < 0)
                goto fail;
            if (!verdict)
                ngroups = 0; /* the general path's datagram ends the run */
            continue;
        }
        if (!g->pairs) {
            PyObject *pairs = PyList_New(0);
            PyObject *group = pairs ? Py_BuildValue("(IKIInN)", g->channel_id,
                                                    (unsigned long long)g->seq, g->k, g->n,
                                                    g->size, pairs) : NULL;
            if (!group || PyList_Append(out, group) < 0) {
                Py_XDECREF(group);
                Py_DECREF(payload);
                goto fail;
            }
            Py_DECREF(group);
            g->pairs = pairs;
            ngroups++;
        }
        PyObject *pair = Py_BuildValue("(iN)", (int)d[OFFSET_SYMBOL_INDEX], payload);
        if (!pair || PyList_Append(g->pairs, pair) < 0) {
            Py_XDECREF(pair);
            goto fail;
        }
        Py_DECREF(pair);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

typedef struct {
    Py_buffer data;
    unsigned channel_id, k, n;
    uint64_t seq;
    uint8_t *repair;
} GroupBlock;

PyDoc_STRVAR(Aead_seal_group_doc,
"seal_group(blocks, type_byte, key_id, session_id, packet_number, symbol_size) -> list\n\n"
"session_id: the session's 16 bytes.\n"
"FEC-encodes each block and returns its datagrams, sealed, interleaved across the\n"
"blocks (symbol 0 of every block, then symbol 1, ...), numbered from packet_number.\n"
"blocks: sequence of (channel_id, block_seq, k, n, data), data k * symbol_size bytes.");

static PyObject *Aead_seal_group(AeadObject *self, PyObject *args)
{
    PyObject *blocks_obj;
    unsigned type_byte, key_id;
    unsigned long long pn;
    Py_buffer session;
    uint8_t session_id[SESSION_ID_SIZE];
    Py_ssize_t s;
    if (enter(self) < 0 ||
        !PyArg_ParseTuple(args, "OIIy*Kn", &blocks_obj, &type_byte, &key_id, &session, &pn, &s))
        return NULL;
    int session_len_ok = session.len == SESSION_ID_SIZE;
    if (session_len_ok)
        memcpy(session_id, session.buf, SESSION_ID_SIZE);
    PyBuffer_Release(&session);
    if (!session_len_ok) {
        PyErr_Format(PyExc_ValueError, "session id must be %d bytes", SESSION_ID_SIZE);
        return NULL;
    }
    if (s <= 0 || s + OVERHEAD > 65535) {
        PyErr_Format(PyExc_ValueError, "symbol size %zd out of range", s);
        return NULL;
    }
    PyObject *seq_obj = PySequence_Fast(blocks_obj, "blocks must be a sequence");
    if (!seq_obj)
        return NULL;
    Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq_obj);
    GroupBlock *blocks = calloc(nb ? (size_t)nb : 1, sizeof(GroupBlock));
    PyObject *out = NULL;
    Py_ssize_t got = 0, total = 0;
    unsigned longest = 0;
    if (!blocks) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < nb; got++) {
        GroupBlock *b = &blocks[got];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq_obj, got), "IKIIy*;block",
                              &b->channel_id, &b->seq, &b->k, &b->n, &b->data))
            goto done;
        if (!block_geometry_ok(b->k, b->n) ||
            b->data.len != (Py_ssize_t)b->k * s) {
            PyBuffer_Release(&b->data);
            PyErr_Format(PyExc_ValueError, "block %llu: k=%u n=%u with %zd bytes of data",
                         (unsigned long long)b->seq, b->k, b->n, b->data.len);
            goto done;
        }
        if (b->n > b->k && !(b->repair = malloc((size_t)(b->n - b->k) * (size_t)s))) {
            PyBuffer_Release(&b->data);
            PyErr_NoMemory();
            goto done;
        }
        total += b->n;
        if (b->n > longest)
            longest = b->n;
    }
    out = PyList_New(total);
    if (!out)
        goto done;
    uint8_t **slots = malloc((total ? (size_t)total : 1) * sizeof(uint8_t *));
    if (!slots) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < total; i++) {
        PyObject *d = PyBytes_FromStringAndSize(NULL, s + OVERHEAD);
        if (!d) {
            free(slots);
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, d);
        slots[i] = (uint8_t *)PyBytes_AS_STRING(d);
    }
    int failed = 0;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t bi = 0; bi < nb; bi++)
        if (blocks[bi].n > blocks[bi].k)
            rs_encode_block(blocks[bi].data.buf, (int)blocks[bi].k,
                            (int)(blocks[bi].n - blocks[bi].k), (size_t)s, blocks[bi].repair);
    Py_ssize_t at = 0;
    for (unsigned i = 0; i < longest && !failed; i++)
        for (Py_ssize_t bi = 0; bi < nb; bi++) {
            GroupBlock *b = &blocks[bi];
            if (i >= b->n)
                continue;
            const uint8_t *sym = i < b->k ? (const uint8_t *)b->data.buf + (size_t)i * s
                                          : b->repair + (size_t)(i - b->k) * s;
            uint8_t *o = slots[at++];
            pack_header(o, (uint8_t)type_byte, key_id, b->channel_id, session_id, pn++, b->seq,
                        i, b->k, b->n);
            if (gcm_seal(self->enc, o, sym, (size_t)s, o + HEADER_SIZE) < 0) {
                failed = 1;
                break;
            }
        }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    free(slots);
    if (failed) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_RuntimeError, "AES-GCM seal failed");
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&blocks[i].data);
        free(blocks[i].repair);
    }
    free(blocks);
    Py_DECREF(seq_obj);
    return out;
}

static PyMethodDef Aead_methods[] = {
    {"seal", (PyCFunction)Aead_seal, METH_VARARGS, Aead_seal_doc},
    {"open", (PyCFunction)Aead_open, METH_VARARGS, Aead_open_doc},
    {"seal_group", (PyCFunction)Aead_seal_group, METH_VARARGS, Aead_seal_group_doc},
    {"open_data", (PyCFunction)Aead_open_data, METH_VARARGS, Aead_open_data_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AeadType = {
    DDC_TYPE_FIELDS("appliance.protocol._native.Aead",
                    "Aead(key): AES-256-GCM keyed once, for one link session.",
                    AeadObject, Aead_init, Aead_dealloc, Aead_methods),
};

/* ---- module functions: the erasure code on its own ------------------------------ */

PyDoc_STRVAR(rs_encode_doc,
"rs_encode(data, k, n) -> bytes\n\n"
"The n - k repair symbols of k equal data symbols laid end to end in data.");

static PyObject *py_rs_encode(PyObject *mod, PyObject *args)
{
    Py_buffer data;
    int k, n;
    if (!PyArg_ParseTuple(args, "y*ii", &data, &k, &n))
        return NULL;
    PyObject *out = NULL;
    if (!block_geometry_ok(k, n) || data.len % k) {
        PyErr_Format(PyExc_ValueError, "cannot encode %zd bytes as k=%d n=%d", data.len, k, n);
        goto done;
    }
    size_t s = (size_t)data.len / (size_t)k;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((size_t)(n - k) * s));
    if (!out)
        goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    rs_encode_block(data.buf, k, n - k, s, o);
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    return out;
}

PyDoc_STRVAR(rs_decode_doc,
"rs_decode(symbols, k, n, size) -> bytes\n\n"
"The k data symbols, end to end, from a dict of at least k received symbols\n"
"(index -> bytes of size). Raises ValueError when they cannot rebuild the block.");

static PyObject *py_rs_decode(PyObject *mod, PyObject *args)
{
    PyObject *symbols;
    int k, n;
    Py_ssize_t s;
    if (!PyArg_ParseTuple(args, "O!iin", &PyDict_Type, &symbols, &k, &n, &s))
        return NULL;
    if (!block_geometry_ok(k, n) || s < 0) {
        PyErr_Format(PyExc_ValueError, "bad block geometry k=%d n=%d size=%zd", k, n, s);
        return NULL;
    }
    Py_buffer bufs[MAX_SYMBOLS];
    int have[MAX_SYMBOLS];
    int nbufs = 0;
    memset(have, -1, sizeof have);
    PyObject *out = NULL, *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(symbols, &pos, &key, &value)) {
        long idx = PyLong_AsLong(key);
        if (idx == -1 && PyErr_Occurred())
            goto done;
        if (idx < 0 || idx >= n) {
            PyErr_Format(PyExc_ValueError, "symbol index %ld outside 0..%d", idx, n - 1);
            goto done;
        }
        if (PyObject_GetBuffer(value, &bufs[nbufs], PyBUF_SIMPLE) < 0)
            goto done;
        if (bufs[nbufs].len != s) {
            PyErr_Format(PyExc_ValueError, "symbol %ld is %zd bytes, not %zd", idx,
                         bufs[nbufs].len, s);
            PyBuffer_Release(&bufs[nbufs]);
            goto done;
        }
        have[idx] = nbufs++;
    }
    if (nbufs < k) {
        PyErr_Format(PyExc_ValueError, "%d symbols cannot rebuild a block of %d", nbufs, k);
        goto done;
    }
    int missing[MAX_SYMBOLS], repair[MAX_SYMBOLS], e = 0;
    for (int j = 0; j < k; j++)
        if (have[j] < 0)
            missing[e++] = j;
    for (int i = k, used = 0; i < n && used < e; i++)
        if (have[i] >= 0)
            repair[used++] = i - k;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)k * s);
    if (!out)
        goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    for (int j = 0; j < k; j++)
        if (have[j] >= 0)
            memcpy(o + (size_t)j * s, bufs[have[j]].buf, (size_t)s);
    if (!e)
        goto done;
    uint8_t *m = malloc((size_t)e * e);
    uint8_t *work = malloc((size_t)e * s);
    if (!m || !work) {
        free(m);
        free(work);
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    int singular = 0;
    Py_BEGIN_ALLOW_THREADS
    /* work_a = R_a minus the known data's share: what the missing data must make. */
    for (int a = 0; a < e; a++) {
        uint8_t *w = work + (size_t)a * s;
        memcpy(w, bufs[have[k + repair[a]]].buf, (size_t)s);
        for (int j = 0; j < k; j++)
            if (have[j] >= 0)
                mul_xor(w, o + (size_t)j * s, cauchy(k, repair[a], j), (size_t)s);
    }
    for (int a = 0; a < e; a++)
        for (int b = 0; b < e; b++)
            m[a * e + b] = cauchy(k, repair[a], missing[b]);
    singular = gf_invert(m, e) < 0;
    if (!singular)
        for (int b = 0; b < e; b++) {
            uint8_t *d = o + (size_t)missing[b] * s;
            memset(d, 0, (size_t)s);
            for (int a = 0; a < e; a++)
                mul_xor(d, work + (size_t)a * s, m[b * e + a], (size_t)s);
        }
    Py_END_ALLOW_THREADS
    free(m);
    free(work);
    if (singular) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_RuntimeError, "decode matrix singular (a bug)");
    }
done:
    for (int i = 0; i < nbufs; i++)
        PyBuffer_Release(&bufs[i]);
    return out;
}

static PyObject *py_gf_mul(PyObject *mod, PyObject *args)
{
    unsigned char a, b;
    if (!PyArg_ParseTuple(args, "bb", &a, &b))
        return NULL;
    return PyLong_FromLong(gf_mul(a, b));
}


/* ---- record frames (records.py has the layout's Python reference decoder) ---------
 * A frame: u32 length, then the body: u8 version, u8 flags, u64 seq, u64 stream seq,
 * i32 partition, i64 offset, i64 prev offset, u8 timestamp type, i64 timestamp, topic
 * (u16 length + UTF-8), key (u32 length or FRAME_NULL_LENGTH + bytes), u16 header count,
 * each header a name (as the topic) and a value (as the key), then the value (as the key;
 * a filtered-run marker's is its u64 count). Big-endian throughout. */
#define FRAME_VERSION 1
#define FRAME_FLAG_DURABLE 0x01
#define FRAME_FLAG_FILTERED_RUN 0x02
#define FRAME_NULL_LENGTH 0xFFFFFFFFu
#define FRAME_LEN_SIZE 4
#define FRAME_FIXED_SIZE 47

static const char FRAME_PAST_END[] = "frame field runs past the end of the frame";

typedef struct {
    const uint8_t *p;
    Py_ssize_t pos, end;
    const char *error; /* the first problem, as records.py's decoder names it */
} FrameReader;

/* A u16-length UTF-8 name; NULL with r->error set (or a Python error) on failure. */
static PyObject *frame_name(FrameReader *r)
{
    if (r->pos + 2 > r->end) {
        r->error = FRAME_PAST_END;
        return NULL;
    }
    Py_ssize_t n = (Py_ssize_t)get_be(r->p + r->pos, 2);
    r->pos += 2;
    if (r->pos + n > r->end) {
        r->error = FRAME_PAST_END;
        return NULL;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)r->p + r->pos, n, NULL);
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        r->error = "frame has a topic or header name that is not UTF-8";
    }
    r->pos += n;
    return s;
}

/* u32-length bytes or None; NULL with r->error set on failure. */
static PyObject *frame_opt_bytes(FrameReader *r)
{
    if (r->pos + 4 > r->end) {
        r->error = FRAME_PAST_END;
        return NULL;
    }
    uint64_t n = get_be(r->p + r->pos, 4);
    r->pos += 4;
    if (n == FRAME_NULL_LENGTH)
        Py_RETURN_NONE;
    if (r->pos + (Py_ssize_t)n > r->end) {
        r->error = FRAME_PAST_END;
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)r->p + r->pos, (Py_ssize_t)n);
    r->pos += (Py_ssize_t)n;
    return b;
}

/* Interned attribute names of Record, in its field order. */
enum { R_VALUE, R_KEY, R_HEADERS, R_TOPIC, R_PARTITION, R_OFFSET, R_PREV, R_TIMESTAMP,
       R_TS_TYPE, R_DURABLE, R_SEQ, R_STREAM_SEQ, R_FILTERED, R_FIELDS };
static const char *const record_fields[R_FIELDS] = {
    "value", "key", "headers", "topic", "partition", "offset", "prev_offset", "timestamp",
    "timestamp_type", "durable", "seq", "stream_seq", "filtered"};
static PyObject *record_names[R_FIELDS];

/* Record's class and where each field's slot sits in its objects (records.py binds its
 * dataclass once, at import: bind_record). parse_frames builds each record straight in
 * its slots and append_frame reads them so, as the dataclass's __init__ and attribute
 * reads would, without a Python call per record: that call cost the egress more than
 * parsing the frame. The offsets are read from the class's own member descriptors, so a
 * field added to Record and not here fails bind_record at import, not a record later. */
static PyTypeObject *record_type;
static Py_ssize_t record_slot[R_FIELDS];

#define RECORD_SLOT(obj, i) (*(PyObject **)((char *)(obj) + record_slot[i]))

PyDoc_STRVAR(bind_record_doc,
"bind_record(cls)\n\n"
"The class parse_frames makes records of: a slots class (records.Record) with exactly\n"
"the fields value, key, headers, topic, partition, offset, prev_offset, timestamp,\n"
"timestamp_type, durable, seq, stream_seq, filtered, and nothing to run on creation.");

static PyObject *py_bind_record(PyObject *mod, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "bind_record() needs a class");
        return NULL;
    }
    PyTypeObject *t = (PyTypeObject *)cls;
    Py_ssize_t slot[R_FIELDS];
    for (int i = 0; i < R_FIELDS; i++) {
        PyObject *d = PyObject_GetAttr(cls, record_names[i]);
        if (d == NULL)
            PyErr_Clear();
        int ok = d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (ok)
            slot[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_XDECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%U is not a slot", t->tp_name, record_names[i]);
            return NULL;
        }
    }
    if (t->tp_itemsize != 0 || t->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) +
                                                          R_FIELDS * sizeof(PyObject *))) {
        PyErr_Format(PyExc_TypeError, "%s has other fields than parse_frames fills",
                     t->tp_name);
        return NULL;
    }
    memcpy(record_slot, slot, sizeof slot);
    Py_XSETREF(record_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* One frame body [pos, end) as a record of the bound class; NULL with r->error set, or
 * with a Python error. */
static PyObject *frame_record(FrameReader *r)
{
    const uint8_t *f = r->p + r->pos;
    if (r->end - r->pos < FRAME_FIXED_SIZE) {
        r->error = FRAME_PAST_END;
        return NULL;
    }
    if (f[0] != FRAME_VERSION) {
        static char msg[40];
        snprintf(msg, sizeof msg, "unknown frame version %u", f[0]);
        r->error = msg;
        return NULL;
    }
    int flags = f[1];
    uint64_t seq = get_be(f + 2, 8), stream_seq = get_be(f + 10, 8);
    int32_t partition = (int32_t)(uint32_t)get_be(f + 18, 4);
    int64_t offset = (int64_t)get_be(f + 22, 8), prev = (int64_t)get_be(f + 30, 8);
    int ts_type = f[38];
    int64_t timestamp = (int64_t)get_be(f + 39, 8);
    r->pos += FRAME_FIXED_SIZE;
    PyObject *topic = NULL, *key = NULL, *headers = NULL, *value = NULL, *out = NULL;
    if (!(topic = frame_name(r)) || !(key = frame_opt_bytes(r)))
        goto done;
    if (r->pos + 2 > r->end) {
        r->error = FRAME_PAST_END;
        goto done;
    }
    Py_ssize_t count = (Py_ssize_t)get_be(r->p + r->pos, 2);
    r->pos += 2;
    if (!(headers = PyList_New(0)))
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = frame_name(r), *val = name ? frame_opt_bytes(r) : NULL, *pair = NULL;
        if (val)
            pair = PyTuple_Pack(2, name, val);
        Py_XDECREF(name);
        Py_XDECREF(val);
        if (!pair || PyList_Append(headers, pair) < 0) {
            Py_XDECREF(pair);
            goto done;
        }
        Py_DECREF(pair);
    }
    if (!(value = frame_opt_bytes(r)))
        goto done;
    if (r->pos != r->end) {
        r->error = "frame has trailing bytes";
        goto done;
    }
    uint64_t filtered = 0;
    if (flags & FRAME_FLAG_FILTERED_RUN) {
        if (value == Py_None || PyBytes_GET_SIZE(value) != 8) {
            r->error = "filtered-run marker without its count";
            goto done;
        }
        filtered = get_be((const uint8_t *)PyBytes_AS_STRING(value), 8);
        if (filtered == 0)
            filtered = 1;
        Py_SETREF(value, Py_NewRef(Py_None));
        Py_SETREF(key, Py_NewRef(Py_None));
        Py_SETREF(headers, PyList_New(0));
        if (!headers)
            goto done;
    }
    if (!(out = record_type->tp_alloc(record_type, 0)))
        goto done;
    /* (the slots take the references; a slot left NULL by a failure below is cleared
     * with the object) */
    RECORD_SLOT(out, R_VALUE) = value;
    RECORD_SLOT(out, R_KEY) = key;
    RECORD_SLOT(out, R_HEADERS) = headers;
    RECORD_SLOT(out, R_TOPIC) = topic;
    value = key = headers = topic = NULL;
    RECORD_SLOT(out, R_DURABLE) = Py_NewRef((flags & FRAME_FLAG_DURABLE) ? Py_True : Py_False);
    if (!(RECORD_SLOT(out, R_PARTITION) = PyLong_FromLong(partition)) ||
        !(RECORD_SLOT(out, R_OFFSET) = PyLong_FromLongLong(offset)) ||
        !(RECORD_SLOT(out, R_PREV) = PyLong_FromLongLong(prev)) ||
        !(RECORD_SLOT(out, R_TIMESTAMP) = PyLong_FromLongLong(timestamp)) ||
        !(RECORD_SLOT(out, R_TS_TYPE) = PyLong_FromLong(ts_type)) ||
        !(RECORD_SLOT(out, R_SEQ) = PyLong_FromUnsignedLongLong(seq)) ||
        !(RECORD_SLOT(out, R_STREAM_SEQ) = PyLong_FromUnsignedLongLong(stream_seq)) ||
        !(RECORD_SLOT(out, R_FILTERED) = PyLong_FromUnsignedLongLong(filtered)))
        Py_CLEAR(out);
done:
    Py_XDECREF(topic);
    Py_XDECREF(key);
    Py_XDECREF(headers);
    Py_XDECREF(value);
    return out;
}

PyDoc_STRVAR(parse_frames_doc,
"parse_frames(chunk, pos, max_frame) -> (records, pos, error)\n\n"
"The whole frames of chunk from pos, each a record of the class bind_record bound;\n"
"pos: where the first incomplete frame starts; error: None, or the text of the first\n"
"malformed frame (records holds those before it), named as records.py's decoder names it.");

static PyObject *py_parse_frames(PyObject *mod, PyObject *args)
{
    Py_buffer chunk;
    Py_ssize_t pos;
    unsigned long long max_frame;
    if (!PyArg_ParseTuple(args, "y*nK", &chunk, &pos, &max_frame))
        return NULL;
    if (record_type == NULL) {
        PyBuffer_Release(&chunk);
        PyErr_SetString(PyExc_RuntimeError, "parse_frames() before bind_record()");
        return NULL;
    }
    PyObject *records = PyList_New(0), *error = NULL, *out = NULL;
    const uint8_t *p = chunk.buf;
    Py_ssize_t end = chunk.len;
    if (!records)
        goto done;
    if (pos < 0)
        pos = 0;
    while (pos + FRAME_LEN_SIZE <= end) {
        uint64_t flen = get_be(p + pos, 4);
        if (flen > max_frame) {
            error = PyUnicode_FromFormat("frame of %llu bytes exceeds max_record_bytes %llu",
                                         (unsigned long long)flen, max_frame);
            if (!error)
                goto done;
            break;
        }
        if ((uint64_t)(end - pos - FRAME_LEN_SIZE) < flen)
            break;
        FrameReader r = {p, pos + FRAME_LEN_SIZE, pos + FRAME_LEN_SIZE + (Py_ssize_t)flen, NULL};
        PyObject *rec = frame_record(&r);
        if (rec == NULL) {
            if (r.error == NULL || !(error = PyUnicode_FromString(r.error)))
                goto done;
            break;
        }
        int failed = PyList_Append(records, rec);
        Py_DECREF(rec);
        if (failed < 0)
            goto done;
        pos = r.end;
    }
    out = Py_BuildValue("(OnO)", records, pos, error ? error : Py_None);
done:
    Py_XDECREF(records);
    Py_XDECREF(error);
    PyBuffer_Release(&chunk);
    return out;
}


/* bytes-like or None: its length (FRAME_NULL_LENGTH for None); -1 with an error set. */
static int frame_bytes_view(PyObject *o, Py_buffer *view, const char *what)
{
    view->obj = NULL;
    view->len = 0;
    if (o == Py_None)
        return 0;
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "record %s must be bytes or None", what);
        return -1;
    }
    if ((uint64_t)view->len >= FRAME_NULL_LENGTH) {
        PyBuffer_Release(view);
        view->obj = NULL;
        PyErr_Format(PyExc_ValueError, "record %s is too long for a frame", what);
        return -1;
    }
    return 0;
}

static uint8_t *frame_put_bytes(uint8_t *w, PyObject *o, const Py_buffer *view)
{
    if (o == Py_None) {
        put_be(w, FRAME_NULL_LENGTH, 4);
        return w + 4;
    }
    put_be(w, (uint64_t)view->len, 4);
    memcpy(w + 4, view->buf, (size_t)view->len);
    return w + 4 + view->len;
}

PyDoc_STRVAR(append_frame_doc,
"append_frame(buf, record) -> None\n\n"
"Append record's length-prefixed frame to the bytearray buf (records.py's\n"
"append_frame_reference is the same in Python). The value is copied once.");

static PyObject *py_append_frame(PyObject *mod, PyObject *args)
{
    PyObject *buf, *rec, *f[R_FIELDS] = {NULL};
    if (!PyArg_ParseTuple(args, "O!O", &PyByteArray_Type, &buf, &rec))
        return NULL;
    PyObject *result = NULL, *headers = NULL;
    Py_buffer value = {0}, key = {0};
    Py_buffer *hv = NULL; /* header values */
    Py_ssize_t nh = 0, filled = 0;
    int exact = record_type != NULL && Py_IS_TYPE(rec, record_type);
    for (int i = 0; i < R_FIELDS; i++) {
        if (exact && RECORD_SLOT(rec, i) != NULL)
            f[i] = Py_NewRef(RECORD_SLOT(rec, i));
        else if (!(f[i] = PyObject_GetAttr(rec, record_names[i])))
            goto done;
    }
    long long partition = PyLong_AsLongLong(f[R_PARTITION]);
    long long offset = PyLong_AsLongLong(f[R_OFFSET]), prev = PyLong_AsLongLong(f[R_PREV]);
    long long timestamp = PyLong_AsLongLong(f[R_TIMESTAMP]);
    long ts_type = PyLong_AsLong(f[R_TS_TYPE]);
    unsigned long long seq = PyLong_AsUnsignedLongLong(f[R_SEQ]);
    unsigned long long stream_seq = PyLong_AsUnsignedLongLong(f[R_STREAM_SEQ]);
    unsigned long long filtered = PyLong_AsUnsignedLongLong(f[R_FILTERED]);
    int durable = PyObject_IsTrue(f[R_DURABLE]);
    if (PyErr_Occurred() || durable < 0)
        goto done;
    if (partition < INT32_MIN || partition > INT32_MAX || ts_type < 0 || ts_type > 255) {
        PyErr_SetString(PyExc_OverflowError, "record partition or timestamp_type out of range");
        goto done;
    }
    Py_ssize_t topic_len;
    const char *topic = PyUnicode_AsUTF8AndSize(f[R_TOPIC], &topic_len);
    if (!topic)
        goto done;
    if (topic_len > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "record topic is longer than 65535 bytes");
        goto done;
    }
    if (!(headers = PySequence_Fast(f[R_HEADERS], "record headers must be a list")))
        goto done;
    nh = PySequence_Fast_GET_SIZE(headers);
    if (nh > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "record has more than 65535 headers");
        goto done;
    }
    size_t head = FRAME_FIXED_SIZE + 2 + (size_t)topic_len + 4 + 2;
    if (frame_bytes_view(f[R_KEY], &key, "key") < 0)
        goto done;
    head += (size_t)key.len;
    if (nh && !(hv = PyMem_Calloc((size_t)nh, sizeof *hv))) {
        PyErr_NoMemory();
        goto done;
    }
    const char **hname = NULL;
    Py_ssize_t *hname_len = NULL;
    if (nh) {
        hname = PyMem_Calloc((size_t)nh, sizeof *hname);
        hname_len = PyMem_Calloc((size_t)nh, sizeof *hname_len);
        if (!hname || !hname_len) {
            PyErr_NoMemory();
            goto free_names;
        }
    }
    for (; filled < nh; filled++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(headers, filled);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "record headers must be (name, value) pairs");
            goto free_names;
        }
        hname[filled] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &hname_len[filled]);
        if (!hname[filled])
            goto free_names;
        if (hname_len[filled] > 0xFFFF) {
            PyErr_SetString(PyExc_ValueError, "record header name longer than 65535 bytes");
            goto free_names;
        }
        if (frame_bytes_view(PyTuple_GET_ITEM(pair, 1), &hv[filled], "header value") < 0)
            goto free_names;
        head += 2 + (size_t)hname_len[filled] + 4 + (size_t)hv[filled].len;
    }
    int flags = (durable ? FRAME_FLAG_DURABLE : 0) | (filtered ? FRAME_FLAG_FILTERED_RUN : 0);
    size_t vlen = 0;
    if (filtered)
        vlen = 8;
    else if (frame_bytes_view(f[R_VALUE], &value, "value") < 0)
        goto free_names;
    else
        vlen = (size_t)value.len;
    size_t flen = head + 4 + vlen;
    if ((uint64_t)flen > 0xFFFFFFFFu) {
        PyErr_SetString(PyExc_ValueError, "record is too long for a frame");
        goto free_names;
    }
    Py_ssize_t old = PyByteArray_GET_SIZE(buf);
    if (PyByteArray_Resize(buf, old + FRAME_LEN_SIZE + (Py_ssize_t)flen) < 0)
        goto free_names;
    uint8_t *w = (uint8_t *)PyByteArray_AS_STRING(buf) + old;
    put_be(w, flen, 4);
    w += 4;
    w[0] = FRAME_VERSION;
    w[1] = (uint8_t)flags;
    put_be(w + 2, seq, 8);
    put_be(w + 10, stream_seq, 8);
    put_be(w + 18, (uint64_t)(uint32_t)(int32_t)partition, 4);
    put_be(w + 22, (uint64_t)offset, 8);
    put_be(w + 30, (uint64_t)prev, 8);
    w[38] = (uint8_t)ts_type;
    put_be(w + 39, (uint64_t)timestamp, 8);
    w += FRAME_FIXED_SIZE;
    put_be(w, (uint64_t)topic_len, 2);
    memcpy(w + 2, topic, (size_t)topic_len);
    w += 2 + topic_len;
    w = frame_put_bytes(w, f[R_KEY], &key);
    put_be(w, (uint64_t)nh, 2);
    w += 2;
    for (Py_ssize_t i = 0; i < nh; i++) {
        put_be(w, (uint64_t)hname_len[i], 2);
        memcpy(w + 2, hname[i], (size_t)hname_len[i]);
        w += 2 + hname_len[i];
        w = frame_put_bytes(w, PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(headers, i), 1),
                            &hv[i]);
    }
    if (filtered) {
        put_be(w, 8, 4);
        put_be(w + 4, filtered, 8);
    } else {
        w = frame_put_bytes(w, f[R_VALUE], &value);
    }
    result = Py_NewRef(Py_None);
free_names:
    PyMem_Free(hname);
    PyMem_Free(hname_len);
done:
    for (Py_ssize_t i = 0; i < filled; i++)
        if (hv[i].obj)
            PyBuffer_Release(&hv[i]);
    PyMem_Free(hv);
    if (value.obj)
        PyBuffer_Release(&value);
    if (key.obj)
        PyBuffer_Release(&key);
    Py_XDECREF(headers);
    for (int i = 0; i < R_FIELDS; i++)
        Py_XDECREF(f[i]);
    return result;
}

static PyMethodDef module_methods[] = {
    {"rs_encode", py_rs_encode, METH_VARARGS, rs_encode_doc},
    {"rs_decode", py_rs_decode, METH_VARARGS, rs_decode_doc},
    {"gf_mul", py_gf_mul, METH_VARARGS, PyDoc_STR("gf_mul(a, b) -> a * b in GF(2^8)")},
    {"parse_frames", py_parse_frames, METH_VARARGS, parse_frames_doc},
    {"append_frame", py_append_frame, METH_VARARGS, append_frame_doc},
    {"bind_record", py_bind_record, METH_O, bind_record_doc},
    {NULL, NULL, 0, NULL},
};

DDC_MODULE_DEF(native_module, "appliance.protocol._native",
               "Reed-Solomon (Cauchy, GF(2^8)) and AES-256-GCM for the link's hot path.",
               module_methods);

/* The integer constants the module exports (wire.py builds and checks its struct from
 * them), in one table: EXPORT_INT gives each the name of its C macro, so the two cannot
 * differ; VERSION is the one named otherwise. */
#define EXPORT_INT(name) {#name, name}
static const struct {
    const char *name;
    long value;
} int_constants[] = {
    EXPORT_INT(MAX_SYMBOLS), {"VERSION", WIRE_VERSION}, EXPORT_INT(HEADER_SIZE),
    EXPORT_INT(TAG_SIZE), EXPORT_INT(SESSION_ID_SIZE), EXPORT_INT(BLOCK_SEQ_SIZE),
    EXPORT_INT(TYPE_DATA), EXPORT_INT(TYPE_HEARTBEAT), EXPORT_INT(TYPE_MASK),
    EXPORT_INT(FLAG_ENCRYPTED), EXPORT_INT(OFFSET_MAGIC), EXPORT_INT(OFFSET_VERSION),
    EXPORT_INT(OFFSET_TYPE), EXPORT_INT(OFFSET_KEY_ID), EXPORT_INT(OFFSET_CHANNEL_ID),
    EXPORT_INT(OFFSET_SESSION_ID), EXPORT_INT(OFFSET_PACKET_NUMBER), EXPORT_INT(OFFSET_BLOCK_SEQ),
    EXPORT_INT(OFFSET_SYMBOL_INDEX), EXPORT_INT(OFFSET_K), EXPORT_INT(OFFSET_N),
    EXPORT_INT(FRAME_VERSION), EXPORT_INT(FRAME_FLAG_DURABLE),
    EXPORT_INT(FRAME_FLAG_FILTERED_RUN), EXPORT_INT(FRAME_NULL_LENGTH),
    EXPORT_INT(FRAME_LEN_SIZE), EXPORT_INT(FRAME_FIXED_SIZE),
};
#undef EXPORT_INT

PyMODINIT_FUNC PyInit__native(void)
{
    gf_init();
    pick_simd();
    PyObject *m = ddc_module_create(&native_module, &AeadType, "Aead");
    if (!m)
        return NULL;
    for (int i = 0; i < R_FIELDS; i++)
        if (!(record_names[i] = PyUnicode_InternFromString(record_fields[i])))
            goto fail;
    REASON_AUTH = PyUnicode_InternFromString("auth");
    REASON_MALFORMED = PyUnicode_InternFromString("malformed");
    const char magic[2] = {(char)MAGIC_0, (char)MAGIC_1};
    PyObject *magic_obj = PyBytes_FromStringAndSize(magic, 2);
    if (!REASON_AUTH || !REASON_MALFORMED || !magic_obj ||
        PyModule_AddObject(m, "MAGIC", magic_obj) < 0 ||
        PyModule_AddStringConstant(m, "SIMD", simd_name) < 0)
        goto fail;
    for (size_t i = 0; i < sizeof int_constants / sizeof int_constants[0]; i++)
        if (PyModule_AddIntConstant(m, int_constants[i].name, int_constants[i].value) < 0)
            goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
