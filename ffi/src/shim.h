/*
 * sluice_rte_*: exported wrappers for DPDK functions that are `static inline` in its headers.
 *
 * bindgen cannot generate bindings for static functions defined in C header files, so each one
 * the dataplane needs gets a one-line wrapper here. Only burst-level or rare operations belong
 * here: a wrapper is a real call the C compiler cannot inline into Rust, so per-packet helpers
 * (data pointer, length) are done in Rust over the mbuf fields instead.
 */
#ifndef SLUICE_SHIM_H
#define SLUICE_SHIM_H

#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* rte_eth_rx_burst: receive up to nb_pkts mbufs from (port, queue) into rx_pkts. */
uint16_t sluice_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                                 struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
/* rte_eth_tx_burst: hand the first n of tx_pkts to (port, queue); returns how many it took. */
uint16_t sluice_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                                 struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
/* rte_pktmbuf_alloc: one mbuf from the pool, reset; NULL when the pool is empty. */
struct rte_mbuf *sluice_rte_pktmbuf_alloc(struct rte_mempool *mp);
/* rte_pktmbuf_alloc_bulk: n mbufs or none (0 on success, negative errno otherwise). */
int sluice_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
/* rte_pktmbuf_free: free a (possibly chained) mbuf back to its pool. NULL is allowed. */
void sluice_rte_pktmbuf_free(struct rte_mbuf *m);
/* rte_pktmbuf_append: grow the last segment by len bytes; NULL if there is no tailroom. */
char *sluice_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/* rte_lcore_id: the calling thread's lcore id, or LCORE_ID_ANY for unregistered threads. */
unsigned sluice_rte_lcore_id(void);
/* rte_errno: the per-thread DPDK error number (a TLS macro in C). */
int sluice_rte_errno(void);
/* rte_rdtsc: the time stamp counter. */
uint64_t sluice_rte_rdtsc(void);
/* rte_get_tsc_hz: TSC ticks per second. */
uint64_t sluice_rte_get_tsc_hz(void);
/* rte_mempool_avail_count / in_use_count are exported functions already; nothing needed. */

#endif
