// What every AMX kernel needs before its first tile instruction: Linux's permission for the tile
// state, and the tile configuration record `_tile_loadconfig` reads (palette 1: 8 tiles, each up to
// 16 rows of 64 bytes). Included by int8_linear.c and cpu_attention.c; kernels/cbuild.py hashes it
// with them, so an edit here rebuilds both.
#ifndef LIVEFIM_AMX_TILES_H
#define LIVEFIM_AMX_TILES_H

#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} amx_tile_config;

// Linux hands a process the AMX tile state only on request. Returns 0 when granted, else -1.
static inline int amx_request_tiles(void) {
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 0 : -1;
}

#endif
