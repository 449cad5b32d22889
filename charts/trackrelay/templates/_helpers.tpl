{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "trackrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trackrelay.fullname" -}}
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

{{- define "trackrelay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; call with (dict "ctx" $ "component" "orders"). */}}
{{- define "trackrelay.labels" -}}
helm.sh/chart: {{ include "trackrelay.chart" .ctx }}
{{ include "trackrelay.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: trackrelay
{{- end }}

{{- define "trackrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trackrelay.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "trackrelay.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "trackrelay.liveConfigMap" -}}
{{ include "trackrelay.fullname" . }}-live
{{- end }}

{{- define "trackrelay.redisSecret" -}}
{{ include "trackrelay.fullname" . }}-redis
{{- end }}

{{- define "trackrelay.databaseSecret" -}}
{{ include "trackrelay.fullname" . }}-database
{{- end }}

{{- define "trackrelay.forwarderName" -}}
{{ include "trackrelay.fullname" . }}-forwarder
{{- end }}

{{- define "trackrelay.workloadServiceAccount" -}}
{{ include "trackrelay.fullname" . }}-workload
{{- end }}

{{- define "trackrelay.analyticsUrl" -}}
{{- if .Values.simulator.enabled -}}
http://{{ include "trackrelay.fullname" . }}-simulator.{{ .Release.Namespace }}.svc:{{ .Values.simulator.port }}
{{- else -}}
{{ required "analytics.url is required unless simulator.enabled is true" .Values.analytics.url }}
{{- end }}
{{- end }}

{{- define "trackrelay.healthUrl" -}}
{{- if .Values.analytics.healthUrl -}}
{{ .Values.analytics.healthUrl }}
{{- else if .Values.simulator.enabled -}}
{{ include "trackrelay.analyticsUrl" . }}/healthz
{{- end }}
{{- end }}

{{/* A URL's userinfo part, percent-encoded: a password may hold "/", "#", "?", "@" or ":".
urlquery escapes all of them and writes a space as "+", which userinfo reads literally:
"+" is made "%20" (a "+" of the password itself is already "%2B"). */}}
{{- define "trackrelay.urlEscape" -}}
{{ . | urlquery | replace "+" "%20" }}
{{- end }}

{{/* A password kept across upgrades: the value given, else the Secret's (its key "password",
or "key"), else a new one. */}}
{{- define "trackrelay.password" -}}
{{- $given := index . "given" -}}
{{- $key := index . "key" | default "password" -}}
{{- if $given -}}
{{ $given }}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret -}}
{{- if and $existing (index $existing.data $key) -}}
{{ index $existing.data $key | b64dec }}
{{- else -}}
{{ randAlphaNum 32 }}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The Redis roles, each a user of its own: the keys of files/redis-users.yaml. */}}
{{- define "trackrelay.redisRoles" -}}
{{ .Files.Get "files/redis-users.yaml" | fromYaml | keys | sortAlpha | join " " }}
{{- end }}

{{/* Environment every trackrelay process shares; "role" names its Redis user. */}}
{{- define "trackrelay.commonEnv" -}}
{{- $ctx := .ctx -}}
- name: TRACKRELAY_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "trackrelay.redisSecret" $ctx }}
      key: {{ .role }}-url
- name: TRACKRELAY_LIVE_CONFIGMAP
  value: {{ printf "%s/%s" $ctx.Release.Namespace (include "trackrelay.liveConfigMap" $ctx) | quote }}
- name: TRACKRELAY_DATA_DIR
  value: /tmp/trackrelay
{{- end }}

{{- define "trackrelay.databaseEnv" -}}
- name: TRACKRELAY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "trackrelay.databaseSecret" . }}
      key: url
{{- end }}

{{/* Outbox rows allowed: queue.outboxRows, or one derived from the queue quota (64 bytes of
quota a row, at least 1000: local mode's derived_outbox_quota, by test). */}}
{{- define "trackrelay.outboxRows" -}}
{{- if .Values.queue.outboxRows -}}
{{ .Values.queue.outboxRows }}
{{- else -}}
{{ max 1000 (mul .Values.queue.quotaMiB 16384) }}
{{- end -}}
{{- end }}

{{- define "trackrelay.relayEnv" -}}
- name: TRACKRELAY_QUEUE_QUOTA
  value: "{{ .Values.queue.quotaMiB }}MiB"
# the outbox holds a bounded amount while the queue is unreachable or full, never the backlog
- name: TRACKRELAY_OUTBOX_QUOTA
  value: {{ include "trackrelay.outboxRows" . | quote }}
# room the quota keeps for entries the forwarders will hold pending: at most every
# forwarder's every lane with a full batch (local mode computes the same)
- name: TRACKRELAY_QUEUE_READ_AHEAD
  value: {{ mul .Values.pipeline.replicas.max .Values.forwarder.concurrency .Values.forwarder.batchSize | quote }}
{{- end }}

{{/* Pod-level settings of every trackrelay pod. */}}
{{- define "trackrelay.podSpec" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "trackrelay.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "trackrelay.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* The port a URL names, else its scheme's (443 for https, 5432 for postgresql, else 80). */}}
{{- define "trackrelay.urlPort" -}}
{{- $url := urlParse . -}}
{{- $hostport := splitList ":" $url.host -}}
{{- if gt (len $hostport) 1 -}}
{{ last $hostport }}
{{- else if eq $url.scheme "https" -}}
443
{{- else if hasPrefix "postgres" $url.scheme -}}
5432
{{- else -}}
80
{{- end -}}
{{- end }}

{{/* NetworkPolicyPeers for the release's pods of some components; call with
(dict "ctx" $ "components" (list ...)). A YAML list, for fromYamlArray. */}}
{{- define "trackrelay.componentPeers" -}}
{{- $ctx := .ctx -}}
{{- range .components }}
- podSelector:
    matchLabels:
      {{- include "trackrelay.selectorLabels" (dict "ctx" $ctx "component" .) | nindent 6 }}
{{- end }}
{{- end }}

{{/* The egress rule to analytics at "url": the simulator's pods when the URL is the
simulator's, else networkPolicy.analyticsTo on the URL's port. A YAML mapping, for fromYaml. */}}
{{- define "trackrelay.analyticsEgress" -}}
{{- $ctx := .ctx -}}
{{- if and $ctx.Values.simulator.enabled (eq (urlParse .url).host (urlParse (include "trackrelay.analyticsUrl" $ctx)).host) -}}
to:
  {{- include "trackrelay.componentPeers" (dict "ctx" $ctx "components" (list "simulator")) | nindent 2 }}
ports: [{port: {{ $ctx.Values.simulator.port }}}]
{{- else -}}
to: {{ toYaml $ctx.Values.networkPolicy.analyticsTo | nindent 2 }}
ports: [{port: {{ include "trackrelay.urlPort" .url }}}]
{{- end -}}
{{- end }}

{{/* The egress rule to the order store: the release's PostgreSQL pods, else
networkPolicy.databaseTo on database.externalUrl's port. A YAML mapping, for fromYaml. */}}
{{- define "trackrelay.databaseEgress" -}}
{{- if .Values.postgresql.enabled -}}
to:
  {{- include "trackrelay.componentPeers" (dict "ctx" . "components" (list "postgresql")) | nindent 2 }}
ports: [{port: 5432}]
{{- else -}}
to: {{ toYaml .Values.networkPolicy.databaseTo | nindent 2 }}
ports: [{port: {{ include "trackrelay.urlPort" .Values.database.externalUrl }}}]
{{- end -}}
{{- end }}

{{/* One component's NetworkPolicy: (dict "ctx" $ "component" name "ingress" rules "egress"
rules), each rule {from|to: peers, ports: [{port}]} (no peers: any address). Every
component that sends anything may also ask DNS (networkPolicy.dnsTo, port 53). */}}
{{- define "trackrelay.networkPolicy" -}}
{{- $ctx := .ctx -}}
{{- $ingress := .ingress | default list -}}
{{- $egress := .egress | default list -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "trackrelay.fullname" $ctx }}-{{ .component }}
  labels:
    {{- include "trackrelay.labels" (dict "ctx" $ctx "component" "network") | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "trackrelay.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  policyTypes:
    {{- if $ingress }}
    - Ingress
    {{- end }}
    {{- if $egress }}
    - Egress
    {{- end }}
  {{- if $ingress }}
  ingress:
    {{- range $ingress }}
    - ports:
        {{- range .ports }}
        - {protocol: TCP, port: {{ .port }}}
        {{- end }}
      {{- with .from }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
  {{- end }}
  {{- if $egress }}
  egress:
    {{- range $egress }}
    - ports:
        {{- range .ports }}
        - {protocol: TCP, port: {{ .port }}}
        {{- end }}
      {{- with .to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    - ports:
        - {protocol: UDP, port: 53}
        - {protocol: TCP, port: 53}
      {{- with $ctx.Values.networkPolicy.dnsTo }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- end }}
{{- end }}

{{/* TLS to the stores (redis.tls.secretName, postgresql.tls.secretName, cert-manager-style
Secrets): clients find a store's CA here, the Secret's ca.crt only. */}}
{{- define "trackrelay.tlsCA" -}}
/etc/trackrelay/tls/{{ . }}/ca.crt
{{- end }}

{{/* A URL of the chart's Redis for "userinfo" (user:password, escaped): rediss:// with the
CA when redis.tls.secretName is set, the host the certificate names. */}}
{{- define "trackrelay.redisUrl" -}}
{{- $ctx := .ctx -}}
{{- $host := printf "%s-redis.%s.svc:6379" (include "trackrelay.fullname" $ctx) $ctx.Release.Namespace -}}
{{- if $ctx.Values.redis.tls.secretName -}}
rediss://{{ .userinfo }}@{{ $host }}/0?ssl_ca_certs={{ include "trackrelay.tlsCA" "redis" }}
{{- else -}}
redis://{{ .userinfo }}@{{ $host }}/0
{{- end -}}
{{- end }}

{{/* The volumes of the CAs of "stores" (redis, postgresql) whose TLS is on: ca.crt only,
never the server's key. */}}
{{- define "trackrelay.tlsVolumes" -}}
{{- $ctx := .ctx -}}
{{- range $store := .stores }}
{{- with index $ctx.Values $store "tls" "secretName" }}
- name: {{ $store }}-ca
  secret:
    secretName: {{ . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}
{{- end }}

{{- define "trackrelay.tlsMounts" -}}
{{- $ctx := .ctx -}}
{{- range $store := .stores }}
{{- if index $ctx.Values $store "tls" "secretName" }}
- name: {{ $store }}-ca
  mountPath: {{ include "trackrelay.tlsCA" $store | dir }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* A store's own certificate and key (the Secret's tls.crt, tls.key, ca.crt), readable by
its group only: PostgreSQL refuses a key file others may read (root-owned, 0640 at most). */}}
{{- define "trackrelay.serverTlsVolume" -}}
- name: tls
  secret:
    secretName: {{ . }}
    defaultMode: 0640
{{- end }}
