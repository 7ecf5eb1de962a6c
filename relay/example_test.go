package relay_test

import (
	"context"
	"fmt"
	"log"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A downstream service follows user changes with a durable consumer of its
// own on the relay's stream: in ledger order, from where it left off, each
// message the exact Clerk webhook body with the ledger's headers. (The
// README shows this; TestDurableConsumerFollowsUserEvents runs it.)
func Example_consumer() {
	nc, err := nats.Connect("nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(context.Background(), "LEDGER", jetstream.ConsumerConfig{
		Durable:       "billing",       // one per service: its own position in the feed
		FilterSubject: "ledger.user.>", // user.created, user.updated, user.deleted
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 1, // strictly one at a time, in order
	})
	if err != nil {
		log.Fatal(err)
	}
	cc, _ := cons.Consume(func(m jetstream.Msg) {
		h := m.Headers() // delivery_id, position, type, user_id, occurred_at
		fmt.Println(h.Get("type"), h.Get("user_id"), h.Get("position"), len(m.Data()))
		m.Ack() // after handling: a crash before it redelivers the message
	})
	defer cc.Stop()
	select {} // run until the service stops
}
