/*
 * The few Linux file syscalls Node.js does not expose and the volume store
 * needs: fallocate (punch hole, zero range), lseek with SEEK_DATA / SEEK_HOLE
 * (extents), the size of a block device, and memory aligned for O_DIRECT.
 * Each call is synchronous - metadata operations that do not wait for data to
 * move - but pwriteStaged and pwritePieces, which write data and run on
 * libuv's thread pool.
 *
 * And the sync link's frame MAC (GMAC: AES-256-GCM with an empty plaintext),
 * computed with the OpenSSL that Node.js itself links and exports. Node's
 * createCipheriv builds a cipher object and an OpenSSL context per call, which
 * costs more than MACing a 4 KiB frame; here one context per session key is
 * set up once and each frame only sets the IV.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <node_api.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <unistd.h>

static napi_value throw_errno(napi_env env, const char *syscall, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", syscall, strerror(err));
  napi_value code, message, error, errnum;
  const char *name = "EUNKNOWN";
  switch (err) {
    case EOPNOTSUPP: name = "EOPNOTSUPP"; break;
    case ENOSPC: name = "ENOSPC"; break;
    case EINVAL: name = "EINVAL"; break;
    case EBADF: name = "EBADF"; break;
    case EIO: name = "EIO"; break;
    case ENODEV: name = "ENODEV"; break;
    case EPERM: name = "EPERM"; break;
    case ENOTTY: name = "ENOTTY"; break;
    case EDQUOT: name = "EDQUOT"; break;
    case EFBIG: name = "EFBIG"; break;
    case EROFS: name = "EROFS"; break;
    case EWOULDBLOCK: name = "EWOULDBLOCK"; break;
    case ENOMEM: name = "ENOMEM"; break;
    case ECANCELED: name = "ECANCELED"; break;
    default: break;
  }
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_set_named_property(env, error, "code", code);
  napi_value sc;
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    napi_throw_type_error(env, "ERR_ARGS", "wrong number of arguments");
    return 0;
  }
  return 1;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d < 0 || d > 9007199254740991.0 || d != (double)(int64_t)d) {
    napi_throw_range_error(env, "ERR_RANGE", "expected a non-negative safe integer");
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

/* fallocate(fd, mode, offset, length); mode bits as in linux/falloc.h */
static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t fd, mode, offset, length;
  if (!get_args(env, info, 4, argv)) return NULL;
  if (!get_i64(env, argv[0], &fd) || !get_i64(env, argv[1], &mode) ||
      !get_i64(env, argv[2], &offset) || !get_i64(env, argv[3], &length)) return NULL;
  int r;
  do { r = fallocate((int)fd, (int)mode, offset, length); } while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, "fallocate", errno);
  return NULL;
}

/* lseek(fd, offset, whence); returns -1 for ENXIO (no more data / hole past offset) */
static napi_value js_lseek(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t fd, offset, whence;
  if (!get_args(env, info, 3, argv)) return NULL;
  if (!get_i64(env, argv[0], &fd) || !get_i64(env, argv[1], &offset) || !get_i64(env, argv[2], &whence)) return NULL;
  off_t r = lseek((int)fd, offset, (int)whence);
  napi_value out;
  if (r < 0) {
    if (errno == ENXIO) { napi_create_double(env, -1, &out); return out; }
    return throw_errno(env, "lseek", errno);
  }
  napi_create_double(env, (double)r, &out);
  return out;
}

/* size in bytes of an open block device */
static napi_value js_block_device_size(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t fd;
  if (!get_args(env, info, 1, argv)) return NULL;
  if (!get_i64(env, argv[0], &fd)) return NULL;
  uint64_t size = 0;
  if (ioctl((int)fd, BLKGETSIZE64, &size) < 0) return throw_errno(env, "ioctl(BLKGETSIZE64)", errno);
  napi_value out;
  napi_create_double(env, (double)size, &out);
  return out;
}

/* flock(fd, LOCK_EX or LOCK_SH, non-blocking): one writer per volume across processes */
static napi_value js_flock(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t fd, exclusive;
  if (!get_args(env, info, 2, argv)) return NULL;
  if (!get_i64(env, argv[0], &fd) || !get_i64(env, argv[1], &exclusive)) return NULL;
  int r;
  do { r = flock((int)fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB); } while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, "flock", errno);
  return NULL;
}

/* ---- GMAC ---- */

#define GMAC_KEY_BYTES 32
#define GMAC_IV_BYTES 12
#define GMAC_TAG_BYTES 16
/* EVP_EncryptUpdate takes an int length: longer pieces go in slices (GCM takes AAD in any split) */
#define GMAC_SLICE_BYTES ((size_t)1 << 30)
/* pieces per frame handled without a heap allocation; a frame has a handful */
#define GMAC_PIECES_ON_STACK 16

typedef struct {
  EVP_CIPHER_CTX *ctx; /* NULL once freed */
} gmac_t;

typedef struct {
  napi_value value;
  const uint8_t *data;
  size_t length;
} gmac_piece_t;

/* Throws an Error naming the failed OpenSSL call and OpenSSL's reason, and
 * empties this thread's OpenSSL error queue so the stale entry cannot be
 * reported by Node's own crypto later. */
static napi_value throw_openssl(napi_env env, const char *call) {
  unsigned long e = ERR_get_error();
  char reason[256] = "no OpenSSL error queued";
  if (e != 0) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  char msg[400];
  snprintf(msg, sizeof msg, "GMAC: %s failed: %s", call, reason);
  napi_throw_error(env, "ERR_GMAC_OPENSSL", msg);
  return NULL;
}

/* The bytes of a Uint8Array (a Buffer is one); 0 and a TypeError otherwise. */
static int get_bytes(napi_env env, napi_value v, const char *what, const uint8_t **data, size_t *length) {
  bool is_typedarray = false;
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_is_typedarray(env, v, &is_typedarray) != napi_ok || !is_typedarray ||
      napi_get_typedarray_info(env, v, &type, length, &p, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    char msg[120];
    snprintf(msg, sizeof msg, "%s must be a Buffer or Uint8Array", what);
    napi_throw_type_error(env, "ERR_ARGS", msg);
    return 0;
  }
  *data = p;
  return 1;
}

static void gmac_free_ctx(gmac_t *g) {
  if (g->ctx != NULL) {
    EVP_CIPHER_CTX_free(g->ctx); /* cleanses the key schedule */
    g->ctx = NULL;
  }
}

static void gmac_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  gmac_t *g = data;
  gmac_free_ctx(g);
  free(g);
}

static gmac_t *gmac_this(napi_env env, napi_value self) {
  gmac_t *g = NULL;
  if (napi_unwrap(env, self, (void **)&g) != napi_ok || g == NULL) {
    napi_throw_type_error(env, "ERR_ARGS", "not a Gmac");
    return NULL;
  }
  return g;
}

/* new Gmac(key): key is 32 bytes */
static napi_value js_gmac_new(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self, target;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_get_new_target(env, info, &target) != napi_ok || target == NULL) {
    napi_throw_type_error(env, "ERR_ARGS", "Gmac is a constructor: use new");
    return NULL;
  }
  if (argc != 1) {
    napi_throw_type_error(env, "ERR_ARGS", "new Gmac(key) takes one argument");
    return NULL;
  }
  const uint8_t *key;
  size_t key_length;
  if (!get_bytes(env, argv[0], "the key", &key, &key_length)) return NULL;
  if (key_length != GMAC_KEY_BYTES) {
    napi_throw_range_error(env, "ERR_RANGE", "a GMAC key is 32 bytes (AES-256)");
    return NULL;
  }
  gmac_t *g = calloc(1, sizeof *g);
  if (g == NULL) {
    napi_throw_error(env, "ENOMEM", "GMAC: out of memory");
    return NULL;
  }
  g->ctx = EVP_CIPHER_CTX_new();
  if (g->ctx == NULL) {
    free(g);
    return throw_openssl(env, "EVP_CIPHER_CTX_new");
  }
  /* cipher first, then the IV length, then the key: the IV is set per frame */
  const char *failed = NULL;
  if (EVP_EncryptInit_ex(g->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) failed = "EVP_EncryptInit_ex(aes-256-gcm)";
  else if (EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_SET_IVLEN, GMAC_IV_BYTES, NULL) != 1) failed = "EVP_CTRL_GCM_SET_IVLEN";
  else if (EVP_EncryptInit_ex(g->ctx, NULL, NULL, key, NULL) != 1) failed = "EVP_EncryptInit_ex(key)";
  if (failed != NULL) {
    throw_openssl(env, failed);
    gmac_finalize(env, g, NULL);
    return NULL;
  }
  if (napi_wrap(env, self, g, gmac_finalize, NULL, NULL) != napi_ok) {
    gmac_finalize(env, g, NULL);
    napi_throw_error(env, "ERR_GMAC_OPENSSL", "GMAC: napi_wrap failed");
    return NULL;
  }
  return self;
}

/*
 * gmac.mac(seq, pieces, out): the 16-byte GCM tag of an empty plaintext with
 * the pieces, in order, as AAD and IV = 4 zero bytes || seq (u64 BE), written
 * to out (16 bytes), which is returned. seq is a BigInt in [0, 2^64).
 */
static napi_value js_gmac_mac(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], self;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok) return NULL;
  if (argc != 3) {
    napi_throw_type_error(env, "ERR_ARGS", "mac(seq, pieces, out) takes three arguments");
    return NULL;
  }
  uint64_t seq;
  bool lossless = false;
  if (napi_get_value_bigint_uint64(env, argv[0], &seq, &lossless) != napi_ok) {
    napi_throw_type_error(env, "ERR_ARGS", "seq must be a BigInt");
    return NULL;
  }
  if (!lossless) {
    napi_throw_range_error(env, "ERR_RANGE", "seq must be in [0, 2^64)");
    return NULL;
  }

  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &count) != napi_ok) {
    napi_throw_type_error(env, "ERR_ARGS", "pieces must be an array of Buffers");
    return NULL;
  }

  /* Every element is fetched before any data pointer is taken (out's too):
   * fetching may run JS (a getter on the array), which could detach a buffer
   * or free this Gmac; from the first pointer on, no JS runs until the tag is out. */
  gmac_piece_t on_stack[GMAC_PIECES_ON_STACK];
  gmac_piece_t *pieces = on_stack;
  if (count > GMAC_PIECES_ON_STACK) {
    pieces = malloc(count * sizeof *pieces);
    if (pieces == NULL) {
      napi_throw_error(env, "ENOMEM", "GMAC: out of memory");
      return NULL;
    }
  }
  napi_value result = NULL;
  uint32_t i;
  for (i = 0; i < count; i++) {
    if (napi_get_element(env, argv[1], i, &pieces[i].value) != napi_ok) goto done;
  }
  for (i = 0; i < count; i++) {
    if (!get_bytes(env, pieces[i].value, "every piece", &pieces[i].data, &pieces[i].length)) goto done;
  }
  const uint8_t *tag_out;
  size_t tag_length;
  if (!get_bytes(env, argv[2], "out", &tag_out, &tag_length)) goto done;
  if (tag_length != GMAC_TAG_BYTES) {
    napi_throw_range_error(env, "ERR_RANGE", "out must be 16 bytes");
    goto done;
  }
  gmac_t *g = gmac_this(env, self);
  if (g == NULL) goto done;
  if (g->ctx == NULL) {
    napi_throw_error(env, "ERR_GMAC_FREED", "this Gmac was freed");
    goto done;
  }

  uint8_t iv[GMAC_IV_BYTES] = {0};
  for (int b = 0; b < 8; b++) iv[4 + b] = (uint8_t)(seq >> (56 - 8 * b));
  /* only the IV: the key schedule and GHASH key stay from the constructor */
  if (EVP_EncryptInit_ex(g->ctx, NULL, NULL, NULL, iv) != 1) {
    throw_openssl(env, "EVP_EncryptInit_ex(iv)");
    goto done;
  }
  for (i = 0; i < count; i++) {
    const uint8_t *data = pieces[i].data;
    size_t length = pieces[i].length;
    while (length > 0) {
      size_t n = length < GMAC_SLICE_BYTES ? length : GMAC_SLICE_BYTES;
      int written = 0;
      if (EVP_EncryptUpdate(g->ctx, NULL, &written, data, (int)n) != 1) {
        throw_openssl(env, "EVP_EncryptUpdate(aad)");
        goto done;
      }
      data += n;
      length -= n;
    }
  }
  uint8_t final_out[GMAC_TAG_BYTES];
  int final_length = 0;
  if (EVP_EncryptFinal_ex(g->ctx, final_out, &final_length) != 1) {
    throw_openssl(env, "EVP_EncryptFinal_ex");
    goto done;
  }
  if (EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, GMAC_TAG_BYTES, (void *)tag_out) != 1) {
    throw_openssl(env, "EVP_CTRL_GCM_GET_TAG");
    goto done;
  }
  result = argv[2];
done:
  if (pieces != on_stack) free(pieces);
  return result;
}

/* gmac.free(): releases the OpenSSL context now rather than at garbage collection; later mac() calls throw */
static napi_value js_gmac_free(napi_env env, napi_callback_info info) {
  napi_value self;
  size_t argc = 0;
  if (napi_get_cb_info(env, info, &argc, NULL, &self, NULL) != napi_ok) return NULL;
  gmac_t *g = gmac_this(env, self);
  if (g == NULL) return NULL;
  gmac_free_ctx(g);
  return NULL;
}

static void free_aligned(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* alignedBuffer(bytes, alignment): uninitialised memory starting at a multiple of alignment (a power of two),
 * as O_DIRECT I/O needs; freed when the Buffer is collected */
static napi_value js_aligned_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t bytes, alignment;
  if (!get_args(env, info, 2, argv)) return NULL;
  if (!get_i64(env, argv[0], &bytes) || !get_i64(env, argv[1], &alignment)) return NULL;
  if (bytes < 1 || alignment < (int64_t)sizeof(void *) || (alignment & (alignment - 1)) != 0) return throw_errno(env, "alignedBuffer", EINVAL);
  void *p = NULL;
  int err = posix_memalign(&p, (size_t)alignment, (size_t)bytes);
  if (err != 0) return throw_errno(env, "posix_memalign", err);
  napi_value out;
  if (napi_create_external_buffer(env, (size_t)bytes, p, free_aligned, NULL, &out) != napi_ok) {
    free(p);
    napi_throw_error(env, "ERR_NATIVE", "cannot wrap aligned memory in a Buffer");
    return NULL;
  }
  return out;
}

/* One pwriteStaged() or pwritePieces() call, run on libuv's thread pool. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref src_ref;
  napi_ref stage_ref; /* NULL for pwritePieces */
  int fd;
  const uint8_t *src;
  uint8_t *stage; /* NULL: write from src */
  size_t length;
  size_t piece; /* bytes per pwrite() call at most */
  int64_t offset;
  int err;
} staged_write;

static void staged_write_run(napi_env env, void *data) {
  (void)env;
  staged_write *w = data;
  const uint8_t *from = w->src;
  if (w->stage != NULL) {
    memcpy(w->stage, w->src, w->length);
    from = w->stage;
  }
  size_t done = 0;
  while (done < w->length) {
    size_t want = w->length - done < w->piece ? w->length - done : w->piece;
    ssize_t n = pwrite(w->fd, from + done, want, w->offset + (int64_t)done);
    if (n < 0) {
      if (errno == EINTR) continue;
      w->err = errno;
      return;
    }
    if (n == 0) {
      w->err = EIO;
      return;
    }
    done += (size_t)n;
  }
}

static void staged_write_done(napi_env env, napi_status status, void *data) {
  staged_write *w = data;
  napi_delete_reference(env, w->src_ref);
  if (w->stage_ref != NULL) napi_delete_reference(env, w->stage_ref);
  napi_delete_async_work(env, w->work);
  napi_value result;
  if (status == napi_ok && w->err == 0) {
    napi_get_undefined(env, &result);
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    int err = status == napi_ok ? w->err : ECANCELED;
    /* throw_errno builds the error and throws it; take it back to reject with it */
    throw_errno(env, "pwrite", err);
    napi_get_and_clear_last_exception(env, &result);
    napi_reject_deferred(env, w->deferred, result);
  }
  free(w);
}

/* Queues a write on the thread pool; src (and stage, when there is one) stay referenced until it is done. */
static napi_value start_write(napi_env env, const char *syscall, int64_t fd, napi_value src_value, const void *src, size_t length,
                              napi_value stage_value, uint8_t *stage, size_t piece, int64_t offset) {
  staged_write *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_errno(env, syscall, ENOMEM);
  w->fd = (int)fd;
  w->src = src;
  w->stage = stage;
  w->length = length;
  w->piece = piece;
  w->offset = offset;
  napi_value promise, name;
  napi_create_promise(env, &w->deferred, &promise);
  napi_create_reference(env, src_value, 1, &w->src_ref);
  if (stage_value != NULL) napi_create_reference(env, stage_value, 1, &w->stage_ref);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, staged_write_run, staged_write_done, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

/* pwriteStaged(fd, src, stage, offset): copies src into the start of stage, then writes it at offset,
 * all on the thread pool: a descriptor opened with O_DIRECT needs aligned memory (stage, from alignedBuffer),
 * and the copy into it need not hold the event loop. Resolves once every byte is written. */
static napi_value js_pwrite_staged(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t fd, offset;
  void *src, *stage;
  size_t src_len, stage_len;
  if (!get_args(env, info, 4, argv)) return NULL;
  if (!get_i64(env, argv[0], &fd) || !get_i64(env, argv[3], &offset)) return NULL;
  if (napi_get_buffer_info(env, argv[1], &src, &src_len) != napi_ok || napi_get_buffer_info(env, argv[2], &stage, &stage_len) != napi_ok) {
    napi_throw_type_error(env, "ERR_ARGS", "src and stage must be Buffers");
    return NULL;
  }
  if (src_len > stage_len) {
    napi_throw_range_error(env, "ERR_RANGE", "src is larger than stage");
    return NULL;
  }
  return start_write(env, "pwriteStaged", fd, argv[1], src, src_len, argv[2], stage, SIZE_MAX, offset);
}

/* pwritePieces(fd, src, offset, piece): writes src at offset with one pwrite() per `piece` bytes, on the
 * thread pool. The page cache sizes a new folio by the length of the write that creates it; a later small
 * write into a large folio costs time in proportion to the folio's size (ext4 walks every block of it). */
static napi_value js_pwrite_pieces(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t fd, offset, piece;
  void *src;
  size_t src_len;
  if (!get_args(env, info, 4, argv)) return NULL;
  if (!get_i64(env, argv[0], &fd) || !get_i64(env, argv[2], &offset) || !get_i64(env, argv[3], &piece)) return NULL;
  if (napi_get_buffer_info(env, argv[1], &src, &src_len) != napi_ok) {
    napi_throw_type_error(env, "ERR_ARGS", "src must be a Buffer");
    return NULL;
  }
  if (piece < 1) {
    napi_throw_range_error(env, "ERR_RANGE", "piece must be at least one byte");
    return NULL;
  }
  return start_write(env, "pwritePieces", fd, argv[1], src, src_len, NULL, NULL, (size_t)piece, offset);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"fallocate", NULL, js_fallocate, NULL, NULL, NULL, napi_default, NULL},
    {"lseek", NULL, js_lseek, NULL, NULL, NULL, napi_default, NULL},
    {"blockDeviceSize", NULL, js_block_device_size, NULL, NULL, NULL, napi_default, NULL},
    {"flock", NULL, js_flock, NULL, NULL, NULL, napi_default, NULL},
    {"alignedBuffer", NULL, js_aligned_buffer, NULL, NULL, NULL, napi_default, NULL},
    {"pwriteStaged", NULL, js_pwrite_staged, NULL, NULL, NULL, napi_default, NULL},
    {"pwritePieces", NULL, js_pwrite_pieces, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_property_descriptor gmac_props[] = {
    {"mac", NULL, js_gmac_mac, NULL, NULL, NULL, napi_default, NULL},
    {"free", NULL, js_gmac_free, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value gmac_class;
  napi_define_class(env, "Gmac", NAPI_AUTO_LENGTH, js_gmac_new, NULL,
                    sizeof gmac_props / sizeof gmac_props[0], gmac_props, &gmac_class);
  napi_set_named_property(env, exports, "Gmac", gmac_class);
  napi_value c;
#define CONST(name, value) napi_create_int32(env, value, &c); napi_set_named_property(env, exports, name, c)
  CONST("FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE);
  CONST("FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE);
  CONST("FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
  CONST("SEEK_SET", SEEK_SET);
  CONST("SEEK_END", SEEK_END);
  CONST("SEEK_DATA", SEEK_DATA);
  CONST("SEEK_HOLE", SEEK_HOLE);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
