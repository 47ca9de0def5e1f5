/* See shim.h: one-line exported wrappers over DPDK's static inline functions. */
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "shim.h"

uint16_t sluice_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                                 struct rte_mbuf **rx_pkts, uint16_t nb_pkts) {
  return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t sluice_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                                 struct rte_mbuf **tx_pkts, uint16_t nb_pkts) {
  return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *sluice_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int sluice_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count) {
  return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void sluice_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

char *sluice_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

unsigned sluice_rte_lcore_id(void) { return rte_lcore_id(); }

int sluice_rte_errno(void) { return rte_errno; }

uint64_t sluice_rte_rdtsc(void) { return rte_rdtsc(); }

uint64_t sluice_rte_get_tsc_hz(void) { return rte_get_tsc_hz(); }
