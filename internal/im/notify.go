package im

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hubuim/hubuim/internal/mq"
)

// Notification is one offline recipient of one message, for APNs/FCM-style
// push by the business backend.
type Notification struct {
	User        int64  `json:"user"`
	ConvID      string `json:"conv_id"`
	Seq         int64  `json:"seq"`
	MsgID       int64  `json:"msg_id"`
	Sender      int64  `json:"sender"`
	ContentType int32  `json:"content_type"`
	Preview     []byte `json:"preview"` // base64 in JSON
}

// Notifier hands notifications for offline users to the outside world.
type Notifier interface {
	Notify(ctx context.Context, notes []*Notification) error
}

// DefaultWebhookTimeout bounds one notification webhook call.
const DefaultWebhookTimeout = 3 * time.Second

// maxWebhookErrorBody bounds how much of an error response is read.
const maxWebhookErrorBody = 512

// WebhookNotifier POSTs {"notifications":[...]} as JSON to a URL.
type WebhookNotifier struct {
	url    string
	secret string
	client *http.Client
}

// NewWebhookNotifier returns a notifier posting to url with an optional
// bearer secret; timeout 0 means DefaultWebhookTimeout.
func NewWebhookNotifier(url, secret string, timeout time.Duration) (*WebhookNotifier, error) {
	if url == "" {
		return nil, errors.New("im: notification webhook needs a url")
	}
	if timeout <= 0 {
		timeout = DefaultWebhookTimeout
	}
	return &WebhookNotifier{url: url, secret: secret, client: &http.Client{Timeout: timeout}}, nil
}

// Notify implements Notifier.
func (w *WebhookNotifier) Notify(ctx context.Context, notes []*Notification) error {
	body, err := json.Marshal(struct {
		Notifications []*Notification `json:"notifications"`
	}{notes})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if w.secret != "" {
		req.Header.Set("Authorization", "Bearer "+w.secret)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("im: notification webhook: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxWebhookErrorBody))
		return fmt.Errorf("im: notification webhook: status %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookErrorBody))
	return nil
}

// TopicNotifier publishes each notification as JSON to a topic, keyed by
// user id.
type TopicNotifier struct {
	producer mq.Producer
	topic    string
}

// NewTopicNotifier returns a notifier publishing to topic.
func NewTopicNotifier(p mq.Producer, topic string) (*TopicNotifier, error) {
	if p == nil || topic == "" {
		return nil, errors.New("im: topic notifier needs a producer and a topic")
	}
	return &TopicNotifier{producer: p, topic: topic}, nil
}

// Notify implements Notifier.
func (t *TopicNotifier) Notify(ctx context.Context, notes []*Notification) error {
	for _, n := range notes {
		v, err := json.Marshal(n)
		if err != nil {
			return err
		}
		if err := t.producer.Publish(ctx, t.topic, []byte(strconv.FormatInt(n.User, 10)), v); err != nil {
			return fmt.Errorf("im: notification topic: %w", err)
		}
	}
	return nil
}

// MultiNotifier calls every notifier and joins their errors.
type MultiNotifier []Notifier

// Notify implements Notifier.
func (m MultiNotifier) Notify(ctx context.Context, notes []*Notification) error {
	var errs []error
	for _, n := range m {
		if err := n.Notify(ctx, notes); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
