{{/* Chart name, possibly overridden. */}}
{{- define "campus-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "campus-bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "campus-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "campus-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* part-of is fixed: the ServiceMonitor takes the Prometheus `job` label from it, as the alerts expect. */}}
{{- define "campus-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "campus-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: campus-bridge
{{- end }}

{{- define "campus-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "campus-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The bridge config as mounted: values.config plus static membership, the shared quota and (with it) the
     rule policies' state in the same Redis. */}}
{{- define "campus-bridge.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $kafka := get $cfg "kafka" | default dict }}
{{- if .Values.staticMembership }}
{{- if ne .Values.workload "StatefulSet" }}
{{- fail "staticMembership needs workload: StatefulSet (a Deployment's pod names change on every restart); set staticMembership: false" }}
{{- end }}
{{- $_ := set $kafka "group_instance_id" "${POD_NAME}" }}
{{- end }}
{{- $_ := set $cfg "kafka" $kafka }}
{{- if .Values.sharedQuota.enabled }}
{{- $q := .Values.sharedQuota }}
{{- $shared := dict "redis_url" (required "sharedQuota.redisUrl is required when sharedQuota.enabled" $q.redisUrl) "lease" $q.lease "timeout_ms" $q.timeoutMs }}
{{- if $q.username }}{{ $_ := set $shared "username" $q.username }}{{ end }}
{{- if $q.password.secretName }}{{ $_ := set $shared "password" "${REDIS_PASSWORD}" }}{{ end }}
{{- if $q.keyPrefix }}{{ $_ := set $shared "key_prefix" $q.keyPrefix }}{{ end }}
{{- if $q.expectedInstances }}{{ $_ := set $shared "expected_instances" $q.expectedInstances }}{{ end }}
{{- $delivery := get $cfg "delivery" | default dict }}
{{- $rate := get $delivery "rate_limit" | default dict }}
{{- $_ := set $rate "shared" $shared }}
{{- $_ := set $delivery "rate_limit" $rate }}
{{- if not (hasKey $delivery "policy_state") }}
{{- /* replicas share recipients: the rule policies' caps, dedupe keys and digest windows go to the same Redis */}}
{{- $_ := set $delivery "policy_state" (dict "store" "redis") }}
{{- end }}
{{- $_ := set $cfg "delivery" $delivery }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* SIGTERM grace: above the drain timeout (delivery.shutdown_timeout_seconds, default 30), plus 10 s each for
    the final commit and leaving the group when the brokers do not answer. */}}
{{- define "campus-bridge.gracePeriod" -}}
{{- $delivery := get .Values.config "delivery" | default dict }}
{{- $drain := get $delivery "shutdown_timeout_seconds" | default 30 | int }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be above delivery.shutdown_timeout_seconds (%v)" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add $drain 30 }}
{{- end }}
{{- end }}

{{/* The rule files: {name: text}, from values or the chart's example rules. */}}
{{- define "campus-bridge.rules" -}}
{{- if .Values.rules }}
{{- range $name, $text := .Values.rules }}
{{ $name }}: |
{{- $text | nindent 2 }}
{{- end }}
{{- else }}
{{- range $path, $_ := .Files.Glob "files/rules/*.yaml" }}
{{ base $path }}: |
{{- $.Files.Get $path | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* An autoscaler's replica bounds, checked against the partition count. */}}
{{- define "campus-bridge.checkReplicas" -}}
{{- if gt (int .maxReplicas) (int .partitions) }}
{{- fail (printf "autoscaling maxReplicas (%v) must not exceed the partitions (%v): extra consumers sit idle" .maxReplicas .partitions) }}
{{- end }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail "autoscaling minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- end }}
