{{/* One agent per cluster: fixed names, as the kustomize manifests have. */}}
{{- define "kpath.name" -}}kpath-agent{{- end -}}

{{- define "kpath.labels" -}}
app.kubernetes.io/name: kpath-agent
app.kubernetes.io/part-of: kpath
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* key=value,... with URL-encoded values, as OTEL_EXPORTER_OTLP_HEADERS. */}}
{{- define "kpath.headers" -}}
{{- $out := list -}}
{{- range $k, $v := . -}}
{{- $out = append $out (printf "%s=%s" $k (urlquery $v)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* metrics.auth, checked: a typo must not open the endpoints. */}}
{{- define "kpath.metricsAuth" -}}
{{- if not (has .Values.metrics.auth (list "kubernetes" "none")) -}}
{{- fail (printf "metrics.auth=%q: want kubernetes or none" .Values.metrics.auth) -}}
{{- end -}}
{{- .Values.metrics.auth -}}
{{- end -}}
