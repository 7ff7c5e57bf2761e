package webhook

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sparc-webhooks/webhook/internal/store"
)

// BenchmarkPublish measures Publish with fan-out 10 and synchronous=FULL,
// from one goroutine and from 64.
func BenchmarkPublish(b *testing.B) {
	for _, par := range []int{1, 64} {
		b.Run(fmt.Sprintf("publishers=%d", par), func(b *testing.B) {
			cfg := testConfig()
			cfg.DisableDelivery = true
			d := openTest(b, cfg)
			for i := range 10 {
				_, err := d.Register(context.Background(), Registration{URL: fmt.Sprintf("https://example.com/%d", i), Events: []string{"*"}})
				if err != nil {
					b.Fatal(err)
				}
			}
			data := map[string]string{"pad": strings.Repeat("x", 900)}
			b.SetParallelism(par)
			b.ReportAllocs()
			b.ResetTimer()
			var n atomic.Int64
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := d.Publish(context.Background(), Event{Type: EventJobComplete, Data: data}); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			})
			b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkDeliver measures draining a backlog to a loopback receiver.
func BenchmarkDeliver(b *testing.B) {
	cfg := testConfig()
	cfg.Workers = 32
	cfg.MaxInFlightPerWebhook = 32
	d := openTest(b, cfg)
	var got atomic.Int64
	rc := newReceiver(b, func(_ int, w http.ResponseWriter, _ *http.Request) { got.Add(1); w.WriteHeader(204) })
	for i := range 10 {
		register(b, d, fmt.Sprintf("%s?%d", rc.url(), i))
	}
	data := map[string]string{"pad": strings.Repeat("x", 900)}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := d.Publish(context.Background(), Event{Type: EventJobComplete, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	for got.Load() < int64(10*b.N) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(10*b.N)/time.Since(start).Seconds(), "deliveries/s")
}

// BenchmarkClaim measures claiming due deliveries in batches of 64 from a
// backlog, the writer's work before each batch of attempts.
func BenchmarkClaim(b *testing.B) {
	cfg := testConfig()
	cfg.DisableDelivery = true
	d := openTest(b, cfg)
	for i := range 10 {
		_, err := d.Register(context.Background(), Registration{URL: fmt.Sprintf("https://example.com/%d", i), Events: []string{"*"}})
		if err != nil {
			b.Fatal(err)
		}
	}
	data := map[string]string{"pad": strings.Repeat("x", 900)}
	publish := func(n int) {
		for range n {
			if _, err := d.Publish(context.Background(), Event{Type: EventJobComplete, Data: data}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	claimedN := 0
	for b.Loop() {
		got, err := d.st.Claim(context.Background(), store.ClaimRequest{Room: 64, Window: 64, Lease: time.Hour, Cap: math.MaxInt32})
		if err != nil {
			b.Fatal(err)
		}
		if len(got.Jobs) == 0 {
			b.StopTimer()
			publish(100) // 1,000 more deliveries
			b.StartTimer()
		}
		claimedN += len(got.Jobs)
	}
	b.ReportMetric(float64(claimedN)/b.Elapsed().Seconds(), "deliveries/s")
}
