// Package export delivers finished kpath traces (correlate.Trace) and holds
// the agent's Prometheus metrics.
//
// # Exporters
//
//   - NewJSONL: one span per line, a stable public contract (see below).
//   - NewConsole: a waterfall per trace for humans (see Waterfall); not a
//     contract.
//   - NewOTLP: OTLP/gRPC with a bounded queue; it never blocks Export and
//     counts every span it gives up on. Spans are encoded straight to the
//     protobuf wire format, each under its component's resource.
//
// # JSONL
//
// Each line is one JSONSpan. IDs are lowercase hex; parentSpanId is absent on
// the root; timestamps are decimal strings as in OTLP/JSON; attributes are one
// flat object whose values are JSON strings, numbers (int64) or booleans;
// there is no kind. One line, wrapped here:
//
//	{"traceId":"0102…0f10","spanId":"1011121314151617","parentSpanId":"2021222324252627",
//	 "name":"etcd txn","startTimeUnixNano":"1741964966538897932","endTimeUnixNano":"1741964966543897932",
//	 "attributes":{"kpath.component":"etcd","kpath.revision":123,"kpath.succeeded":true}}
//
// # Metrics
//
// Metric names and labels are a public contract; no label ever names an
// individual object.
//
//	kpath_probe_hits_total{component,probe}            counter   probe firings as counted in BPF
//	kpath_events_dropped_total{reason}                 counter   events lost before correlation:
//	                                                             ringbuf_full, stash_full, ret_without_entry,
//	                                                             decode_error, timeline_evicted
//	kpath_events_unjoined_total{probe,reason}          counter   events that built no span or joined no trace
//	                                                             (correlate.Pairs, correlate.Assembler): no-start,
//	                                                             no-end, no-key, filtered, no-join, orphan, the
//	                                                             row's expected reason (binding-failed) or its
//	                                                             stage's (probes' shapes: Join.Unjoined, Refused)
//	kpath_probe_read_errors_total{probe,field}         counter   captures the BPF program could not read
//	kpath_attach_errors_total{component,probe}         counter   failed probe attachments
//	kpath_attached_probes{component,pid}               gauge     probes attached per traced process
//	kpath_traces_total{complete}                       counter   finished traces, complete="true"|"false"
//	kpath_export_spans_total{exporter}                 counter   spans delivered (exporter="otlp")
//	kpath_export_dropped_spans_total{exporter,reason}  counter   spans given up: queue_full, export_failed,
//	                                                             shutdown, rejected
//	kpath_stage_duration_seconds{stage,resource,component}  histogram  stage durations, 100µs..60s buckets
//	kpath_reconcile_duration_seconds{component,controller,result}  histogram  operators' reconciles; result ok|error|requeue_after|requeue
//	kpath_reconcile_total{component,controller,result}  counter   operators' reconciles
//	kpath_workqueue_wait_seconds{component,controller}  histogram  an operator's receipt of an object → its reconcile
//	                                                             (controller capped at 256 a node, then "other")
//	kpath_webhook_duration_seconds{webhook,type}       histogram  kube-apiserver's admission webhook calls as it times
//	                                                             them; type admit|validating (webhook capped at 256,
//	                                                             then "other")
package export
