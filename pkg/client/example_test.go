package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/hubuim/hubuim/pkg/client"
)

// A device connects over WebSocket, prints what arrives and sends a message.
func Example() {
	c, err := client.New(client.Config{
		Addrs:     []string{"127.0.0.1:3102"},
		Transport: client.TransportWS,
		Mid:       1001,
		Platform:  "web",
		Token:     "token-from-your-backend",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	go func() {
		for ev := range c.Events() {
			switch e := ev.(type) {
			case client.Connected:
				fmt.Println("connected as", e.Mid, e.Key)
			case client.Message:
				fmt.Printf("%s #%d from %d: %s\n", e.ConvId, e.Seq, e.Sender, e.Payload)
			case client.Push:
				fmt.Println("push op", e.Op, string(e.Body))
			case client.Kicked:
				fmt.Println("kicked:", e.Reason)
			case client.Disconnected:
				fmt.Println("disconnected:", e.Err)
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	ack, err := c.Send(ctx, client.User(1002), 1, []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored as", ack.ConvId, ack.Seq)
}

// Cursors persisted by the app let a restarted device pull exactly what it
// missed.
func ExampleClient_Cursors() {
	saved := map[string]int64{"g:42": 1337} // loaded from local storage
	c, err := client.New(client.Config{
		NodeListURL: "http://127.0.0.1:3111/goim/nodes/weighted",
		Transport:   client.TransportTCP,
		Mid:         1001,
		Cursors:     saved,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for range c.Events() {
			// handle events; then persist the cursors, e.g. every second
			_ = c.Cursors()
		}
	}()
	if err := c.Run(ctx); err != nil && err != context.Canceled {
		log.Println("stopped:", err)
	}
}

// A business request whose reply carries the same frame seq.
func ExampleClient_Request() {
	c, err := client.New(client.Config{Addrs: []string{"tls://im.example.com:3104"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	if err := c.ChangeRoom(ctx, "live://1000"); err != nil {
		log.Fatal(err)
	}
	reply, err := c.Request(ctx, 1005, []byte(`{"q":"profile"}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Op, string(reply.Body))
}
