package export

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// exportMethod is the OTLP/gRPC trace service's one method.
const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// otlpClient uploads requests that otlpwire.go encoded: one connection,
// bytes in and out, with the retries the OTLP specification asks for.
type otlpClient struct {
	conn    *grpc.ClientConn
	headers metadata.MD
	timeout time.Duration
}

// rawCodec hands gRPC the encoded request as it is; its name keeps the
// content type the collector expects (application/grpc+proto).
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

// newOTLPClient checks cfg and makes the connection lazily: a collector
// that is down costs failed uploads, not a failed start.
func newOTLPClient(cfg OTLPConfig) (*otlpClient, error) {
	if cfg.ExportTimeout < 0 {
		return nil, errors.New("negative export timeout")
	}
	target, secure := cfg.Endpoint, !cfg.Insecure
	switch {
	case cfg.Endpoint == "":
		return nil, errors.New("no endpoint")
	case strings.Contains(cfg.Endpoint, "://"):
		u, err := url.Parse(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("endpoint %q: want http(s)://host:port", cfg.Endpoint)
		}
		target, secure = u.Host, u.Scheme == "https"
		if u.Port() == "" {
			target = net.JoinHostPort(u.Hostname(), "4317")
		}
	default:
		if _, _, err := net.SplitHostPort(cfg.Endpoint); err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
	}
	creds := insecure.NewCredentials()
	if secure {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("kpath-agent"),
		// gRPC's reconnect backoff grows to 2 minutes by default: a
		// collector back after a long outage would wait that long for its
		// spans. One dial every few seconds to a dead address costs nothing.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMax},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", cfg.Endpoint, err)
	}
	return &otlpClient{conn: conn, headers: metadata.New(cfg.Headers), timeout: orDefault(cfg.ExportTimeout, 10*time.Second)}, nil
}

// reconnectMax bounds the wait between dials of a collector that is down.
const reconnectMax = 3 * time.Second

// upload sends one request, retrying what the specification calls
// retryable for at most the export timeout, and returns how many spans the
// collector took but rejected.
func (c *otlpClient) upload(ctx context.Context, req []byte) (rejected int64, msg string, err error) {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, c.headers), c.timeout)
	defer cancel()
	// The first retry comes soon and the last within seconds: a queue of
	// live traces does not last long enough for the minute-long schedules
	// of general-purpose clients.
	backoff := 250 * time.Millisecond
	var resp []byte
	for {
		err = c.conn.Invoke(ctx, exportMethod, &req, &resp)
		if err == nil {
			return partialSuccess(resp)
		}
		retry, throttle := retryable(err)
		if !retry {
			return 0, "", err
		}
		wait := max(throttle, backoff/2+rand.N(backoff/2))
		if dl, _ := ctx.Deadline(); time.Until(dl) < wait {
			return 0, "", err
		}
		select {
		case <-ctx.Done():
			return 0, "", err
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// retryable follows the OTLP/gRPC specification: these codes are
// transient, and ResourceExhausted only when the server says when to retry.
func retryable(err error) (bool, time.Duration) {
	s, ok := status.FromError(err)
	if !ok {
		return false, 0
	}
	var throttle time.Duration
	for _, d := range s.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			throttle = ri.GetRetryDelay().AsDuration()
		}
	}
	switch s.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
		return true, throttle
	case codes.ResourceExhausted:
		return throttle > 0, throttle
	}
	return false, 0
}

func (c *otlpClient) close() error { return c.conn.Close() }
