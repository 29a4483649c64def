package ikeesp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/roam-vpn/roam/esp"
	"github.com/roam-vpn/roam/ike"
)

// RekeyOnPackets arms the packet-count soft lifetime (child_rekey_packets)
// of a Child SA about to be installed: once its outbound SA has used that
// many sequence numbers, sa replaces it with a CREATE_CHILD_SA, as the
// time-based child_rekey_time does, so it never runs out (ErrSeqExhausted).
// The rekey runs on its own goroutine, which ends with the exchange or with
// the IKE SA.
func RekeyOnPackets(cfg *esp.ChildConfig, sa *ike.SA, packets uint64, log *slog.Logger) {
	if sa == nil || packets == 0 {
		return
	}
	spiIn := cfg.In.SPI()
	cfg.RekeyPackets = packets
	cfg.OnRekeyPackets = func() {
		go func() {
			spi := fmt.Sprintf("%08x", spiIn)
			log.Info("Child SA reached child_rekey_packets, rekeying", "spi_in", spi, "packets", packets)
			// The peer may be replacing it at the same moment, or it may be
			// gone already; either way a successor is or will be there.
			if err := sa.RekeyChild(context.Background(), spiIn); err != nil && !errors.Is(err, ike.ErrRekeyInProgress) && !errors.Is(err, ike.ErrClosed) {
				log.Warn("Child SA rekey after child_rekey_packets not started", "spi_in", spi, "err", err)
			}
		}()
	}
}
