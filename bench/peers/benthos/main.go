// Command benthos-peer is stock Benthos core (github.com/redpanda-data/benthos/v4, MIT) with one plugin added:
// a Kafka input on franz-go (`kafka_lite`), since Benthos core ships no Kafka input. Everything else (the
// bloblang mapping and TOP signing, the http_client output) is Benthos' own; bench/fast.py writes the config.
//
// kafka_lite: one consumer in a group (franz-go), one message per record with the metadata kafka_topic,
// kafka_partition, kafka_offset and kafka_timestamp_ms. A record's offset is committed (every second and at
// close) only once it and every record before it in its partition were acked; a nack is retried
// (service.AutoRetryNacks). It is what the bench needs, not a general Kafka input (no rebalance handling
// beyond franz-go's own: the bench runs one consumer per group).
package main

import (
	"context"
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // ts_format(..., "Asia/Shanghai") without the host's zoneinfo

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/twmb/franz-go/pkg/kgo"
)

type partKey struct {
	topic     string
	partition int32
}

// watermark: the offsets read from one partition, in read order, and which of them are acked.
type watermark struct {
	pending []int64
	acked   map[int64]bool
	commit  int64 // next offset to commit (-1: nothing yet)
}

type kafkaLite struct {
	brokers []string
	topic   string
	group   string

	client *kgo.Client
	buf    []*kgo.Record

	mu       sync.Mutex
	marks    map[partKey]*watermark
	stop     chan struct{}
	stopped  chan struct{}
	closeOne sync.Once
}

func (k *kafkaLite) Connect(ctx context.Context) error {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(k.brokers...),
		kgo.ConsumerGroup(k.group),
		kgo.ConsumeTopics(k.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	if err != nil {
		return err
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return err
	}
	k.client = cl
	go k.commitLoop()
	return nil
}

func (k *kafkaLite) Read(ctx context.Context) (*service.Message, service.AckFunc, error) {
	for len(k.buf) == 0 {
		fetches := k.client.PollRecords(ctx, 1000)
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if fetches.IsClientClosed() {
			return nil, nil, service.ErrNotConnected
		}
		k.buf = fetches.Records()
	}
	rec := k.buf[0]
	k.buf[0] = nil
	k.buf = k.buf[1:]
	key := partKey{rec.Topic, rec.Partition}
	k.mu.Lock()
	w := k.marks[key]
	if w == nil {
		w = &watermark{acked: map[int64]bool{}, commit: -1}
		k.marks[key] = w
	}
	w.pending = append(w.pending, rec.Offset)
	k.mu.Unlock()

	msg := service.NewMessage(rec.Value)
	msg.MetaSet("kafka_topic", rec.Topic)
	msg.MetaSet("kafka_partition", strconv.Itoa(int(rec.Partition)))
	msg.MetaSet("kafka_offset", strconv.FormatInt(rec.Offset, 10))
	msg.MetaSet("kafka_timestamp_ms", strconv.FormatInt(rec.Timestamp.UnixMilli(), 10))
	offset := rec.Offset
	return msg, func(ctx context.Context, err error) error {
		if err != nil {
			return err // AutoRetryNacks sends it again
		}
		k.mu.Lock()
		w.acked[offset] = true
		for len(w.pending) > 0 && w.acked[w.pending[0]] {
			delete(w.acked, w.pending[0])
			w.commit = w.pending[0] + 1
			w.pending = w.pending[1:]
		}
		k.mu.Unlock()
		return nil
	}, nil
}

func (k *kafkaLite) commitLoop() {
	defer close(k.stopped)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-k.stop:
			k.commit()
			return
		case <-tick.C:
			k.commit()
		}
	}
}

func (k *kafkaLite) commit() {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	k.mu.Lock()
	for key, w := range k.marks {
		if w.commit >= 0 {
			if offsets[key.topic] == nil {
				offsets[key.topic] = map[int32]kgo.EpochOffset{}
			}
			offsets[key.topic][key.partition] = kgo.EpochOffset{Epoch: -1, Offset: w.commit}
		}
	}
	k.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k.client.CommitOffsetsSync(ctx, offsets, nil)
}

func (k *kafkaLite) Close(ctx context.Context) error {
	k.closeOne.Do(func() {
		if k.client == nil {
			return
		}
		close(k.stop)
		<-k.stopped
		k.client.Close()
	})
	return nil
}

func main() {
	spec := service.NewConfigSpec().
		Summary("A minimal franz-go Kafka consumer (bench peer).").
		Field(service.NewStringListField("seed_brokers")).
		Field(service.NewStringField("topic")).
		Field(service.NewStringField("consumer_group"))
	err := service.RegisterInput("kafka_lite", spec, func(conf *service.ParsedConfig, _ *service.Resources) (service.Input, error) {
		brokers, err := conf.FieldStringList("seed_brokers")
		if err != nil {
			return nil, err
		}
		topic, err := conf.FieldString("topic")
		if err != nil {
			return nil, err
		}
		group, err := conf.FieldString("consumer_group")
		if err != nil {
			return nil, err
		}
		in := &kafkaLite{brokers: brokers, topic: topic, group: group, marks: map[partKey]*watermark{},
			stop: make(chan struct{}), stopped: make(chan struct{})}
		return service.AutoRetryNacks(in), nil
	})
	if err != nil {
		panic(err)
	}
	service.RunCLI(context.Background())
}
