{{/*
Names, labels and the small decisions more than one template makes.
*/}}

{{- define "aurora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name, at most 45 characters so "-dataplane-metrics" fits in a 63-character name. */}}
{{- define "aurora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aurora.controlplane.fullname" -}}
{{- printf "%s-controlplane" (include "aurora.fullname" .) }}
{{- end }}

{{- define "aurora.dataplane.fullname" -}}
{{- printf "%s-dataplane" (include "aurora.fullname" .) }}
{{- end }}

{{- define "aurora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aurora.labels" -}}
helm.sh/chart: {{ include "aurora.chart" . }}
app.kubernetes.io/name: {{ include "aurora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aurora
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels for one role: include "aurora.selectorLabels" (list . "dataplane"). */}}
{{- define "aurora.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "aurora.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "aurora.componentLabels" -}}
{{- $root := index . 0 -}}
{{ include "aurora.labels" $root }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "aurora.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* image.pullPolicy, or Always for a tag (it can move) and IfNotPresent for a digest (it cannot). */}}
{{- define "aurora.imagePullPolicy" -}}
{{- .Values.image.pullPolicy | default (ternary "IfNotPresent" "Always" (ne .Values.image.digest "")) }}
{{- end }}

{{- define "aurora.secretName" -}}
{{- default (include "aurora.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
The data of the chart's own Secret (base64 values, as JSON): the master key and node token read
back with `lookup` from the Secret already in the cluster, or generated when there is none, and
the provider keys from the values. Computed once per render and kept in .Values: every `include`
runs the template again, and a second run would draw different random values, so the Secret and
the pods' checksum/secret annotations would disagree on the first install and every pod would
restart on the first `helm upgrade`.
*/}}
{{- define "aurora.secretData" -}}
{{- if not (hasKey .Values "_auroraSecretData") }}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "aurora.fullname" .)) | default dict }}
{{- $stored := get $existing "data" | default dict }}
{{- $data := dict }}
{{- range $name := list "AURORA_MASTER_KEY" "AURORA_NODE_TOKEN" }}
{{- $_ := set $data $name (get $stored $name | default (randAlphaNum 48 | b64enc)) }}
{{- end }}
{{- /* The key that encrypts upstream credentials in the store: 32 random bytes, base64 (sprig's
randBytes), as `openssl rand -base64 32` prints it. Kept across upgrades like the others. */}}
{{- $_ := set $data "AURORA_ENCRYPTION_KEY" (get $stored "AURORA_ENCRYPTION_KEY" | default (randBytes 32 | b64enc)) }}
{{- range $provider := list "openai" "anthropic" "openrouter" "zai" "vllm" }}
{{- with index $.Values.providers $provider "apiKey" }}
{{- $_ := set $data (printf "%s_API_KEY" (upper $provider)) (b64enc .) }}
{{- end }}
{{- end }}
{{- $_ := set .Values "_auroraSecretData" $data }}
{{- end }}
{{- toJson (get .Values "_auroraSecretData") }}
{{- end }}

{{/* What the pods' checksum/secret annotation hashes: the Secret's data, stable across upgrades. */}}
{{- define "aurora.secretChecksum" -}}
{{- include "aurora.secretData" . | sha256sum }}
{{- end }}

{{- define "aurora.controlplane.serviceAccountName" -}}
{{- if .Values.controlplane.serviceAccount.create }}
{{- default (include "aurora.controlplane.fullname" .) .Values.controlplane.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controlplane.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aurora.dataplane.serviceAccountName" -}}
{{- if .Values.dataplane.serviceAccount.create }}
{{- default (include "aurora.dataplane.fullname" .) .Values.dataplane.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.dataplane.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the control plane keeps its store in SQLite: a URL from a Secret
(controlplane.database.existingSecret) is a PostgreSQL one. */}}
{{- define "aurora.controlplane.sqlite" -}}
{{- if and (not .Values.controlplane.database.existingSecret) (hasPrefix "sqlite:" (.Values.controlplane.database.url | lower)) }}true{{- end }}
{{- end }}

{{/* The directory SQLite writes to, which the volume is mounted on. */}}
{{- define "aurora.controlplane.dataDir" -}}
/var/lib/aurora
{{- end }}

{{/* The DNS name of the control-plane Service, as a TLS certificate must name it. */}}
{{- define "aurora.controlplane.host" -}}
{{- printf "%s.%s.svc" (include "aurora.controlplane.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "aurora.controlplane.url" -}}
{{- if .Values.dataplane.controlPlaneUrl }}
{{- .Values.dataplane.controlPlaneUrl }}
{{- else }}
{{- printf "%s://%s:%v" (ternary "https" "http" .Values.tls.enabled) (include "aurora.controlplane.host" .) .Values.controlplane.service.port }}
{{- end }}
{{- end }}

{{- define "aurora.dataplane.terminationGracePeriodSeconds" -}}
{{- $s := .Values.dataplane.shutdown -}}
{{- add $s.drainDelaySeconds $s.graceSeconds $s.marginSeconds }}
{{- end }}

{{/*
Refuse value combinations that would install but not work. Called from every workload template,
so `helm template` and `helm install` both fail with the message.
*/}}
{{- define "aurora.validate" -}}
{{- if and (include "aurora.controlplane.sqlite" .) (gt (int .Values.controlplane.replicaCount) 1) }}
{{- fail (printf "controlplane.replicaCount=%v is not supported with SQLite (controlplane.database.url=%q): SQLite lives on one volume and allows one writer. Keep controlplane.replicaCount=1, or point controlplane.database.url at a shared database." .Values.controlplane.replicaCount .Values.controlplane.database.url) }}
{{- end }}
{{- if and (not .Values.controlplane.database.existingSecret) (not (hasPrefix "sqlite:" (.Values.controlplane.database.url | lower))) }}
{{- fail "controlplane.database.url may only be a sqlite: URL: a PostgreSQL URL carries credentials and would land in a ConfigMap. Put it in a Secret and set controlplane.database.existingSecret (and existingSecretKey)." }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled=true needs tls.secretName: a Secret with tls.crt, tls.key and ca.crt for the control plane." }}
{{- end }}
{{- if and .Values.tls.clientSecretName (not .Values.tls.enabled) }}
{{- fail "tls.clientSecretName (mTLS) needs tls.enabled=true." }}
{{- end }}
{{- if and .Values.dataplane.autoscaling.enabled (gt (int .Values.dataplane.autoscaling.minReplicas) (int .Values.dataplane.autoscaling.maxReplicas)) }}
{{- fail "dataplane.autoscaling.minReplicas must not exceed dataplane.autoscaling.maxReplicas." }}
{{- end }}
{{- end }}

{{/* Both roles run under the same pod and container security contexts. */}}
{{- define "aurora.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "aurora.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}
