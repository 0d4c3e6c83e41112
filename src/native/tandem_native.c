/*
 * The few Linux file syscalls Node.js does not expose and the volume store
 * needs: fallocate (punch hole, zero range), lseek with SEEK_DATA / SEEK_HOLE
 * (extents), and the size of a block device. Each call is synchronous: they
 * are metadata operations that do not wait for data to move.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"fallocate", NULL, js_fallocate, NULL, NULL, NULL, napi_default, NULL},
    {"lseek", NULL, js_lseek, NULL, NULL, NULL, napi_default, NULL},
    {"blockDeviceSize", NULL, js_block_device_size, NULL, NULL, NULL, napi_default, NULL},
    {"flock", NULL, js_flock, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
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
