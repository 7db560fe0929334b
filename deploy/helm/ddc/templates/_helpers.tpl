{{/* Names and labels (the usual helm create shapes). */}}
{{- define "ddc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ddc.fullname" -}}
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

{{- define "ddc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ddc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.role }}
{{- end }}

{{- define "ddc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ddc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ddc
{{- end }}

{{- define "ddc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Paths inside the pod: one definition, used by the config, the mounts and the probes (and
the same as the image's: deploy/container/Containerfile).
*/}}
{{- define "ddc.paths" -}}
config: /etc/ddc/ddc.toml
configDir: /etc/ddc
keysDir: /run/ddc-keys
stateDir: /var/lib/ddc
runDir: /run/ddc
statusFile: /run/ddc/status.json
vectorDir: /etc/vector
{{- end }}

{{/*
The ddc container's securityContext: the systemd unit's hardening (ddc@.service, in the ddc role)
where Kubernetes can say it; README.md maps each directive.
*/}}
{{- define "ddc.securityContext" -}}
runAsUser: 10001
runAsGroup: 10001
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The node config as a dict: the user's link / tuning / channels / metrics / logging with
the keys that belong to the pod set by the chart. Rendered to TOML by ddc.toml.
*/}}
{{- define "ddc.config" -}}
{{- $p := include "ddc.paths" . | fromYaml }}
{{- $link := deepCopy .Values.link }}
{{- $_ := set $link "key_file" (printf "%s/link.key" $p.keysDir) }}
{{- if .Values.linkKey.acceptKeys }}
{{- $accept := list }}
{{- range .Values.linkKey.acceptKeys }}
{{- $accept = append $accept (dict "id" .id "file" (printf "%s/accept-%v.key" $p.keysDir .id)) }}
{{- end }}
{{- $_ := set $link "accept_keys" $accept }}
{{- end }}
{{- $metrics := deepCopy .Values.metrics }}
{{- $logging := deepCopy .Values.logging }}
{{- if .Values.vector.enabled }}
{{- $_ := set $metrics "statsd" (printf "127.0.0.1:%v" .Values.vector.statsdPort) }}
{{- $_ := set $logging "syslog" (printf "127.0.0.1:%v" .Values.vector.syslogPort) }}
{{- else }}
{{- $_ := set $metrics "statsd" "" }}
{{- $_ := set $logging "syslog" "" }}
{{- end }}
{{- /* No journald in a container; stderr is what `kubectl logs` shows. */}}
{{- $_ := set $logging "journald" false }}
{{- $_ := set $logging "stderr" true }}
{{- $doc := dict "role" .Values.role "node_name" (default (include "ddc.fullname" .) .Values.nodeName)
      "state_dir" $p.stateDir "status_file" $p.statusFile
      "link" $link "tuning" (deepCopy .Values.tuning) "metrics" $metrics "logging" $logging
      "channel" (deepCopy .Values.channels) }}
{{- toYaml $doc }}
{{- end }}

{{/*
TOML from a dict, for the node config. Helm's toToml would write the integers of values
files as floats (YAML numbers reach templates as float64: "mtu = 1500.0", which ddc
refuses for an integer key); these templates write integral numbers as integers.
  ddc.toml.table: (dict "table" DICT "path" "a.b") -> key/values, then sub-tables
  ddc.toml.value: a scalar, list or inline table
*/}}
{{- define "ddc.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "ddc.toml.value" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) }}{{ printf "%d" $v }}
{{- else if kindIs "float64" $v }}
{{- if eq $v (float64 (int64 $v)) }}{{ printf "%d" (int64 $v) }}{{ else }}{{ printf "%v" $v }}{{ end }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "ddc.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" $v }}{ {{- range $i, $k := keys $v | sortAlpha }}{{ if $i }},{{ end }} {{ include "ddc.toml.key" $k }} = {{ include "ddc.toml.value" (get $v $k) }}{{ end }} }
{{- else }}{{ fail (printf "cannot write %v (%s) as TOML" $v (kindOf $v)) }}
{{- end }}
{{- end }}

{{- define "ddc.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}{{ $all := true }}{{ range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end }}{{ if $all }}yes{{ end }}{{ end }}
{{- end }}

{{- define "ddc.toml.table" -}}
{{- $t := .table }}
{{- $path := .path }}
{{- range $k := keys $t | sortAlpha }}
{{- $v := get $t $k }}
{{- if and (not (kindIs "invalid" $v)) (not (kindIs "map" $v)) (not (include "ddc.toml.isTableArray" $v)) }}
{{ include "ddc.toml.key" $k }} = {{ include "ddc.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $t | sortAlpha }}
{{- $v := get $t $k }}
{{- $sub := ternary (include "ddc.toml.key" $k) (printf "%s.%s" $path (include "ddc.toml.key" $k)) (eq $path "") }}
{{- if kindIs "map" $v }}
{{- if $v }}{{/* an empty table says nothing */}}

[{{ $sub }}]
{{- include "ddc.toml.table" (dict "table" $v "path" $sub) }}
{{- end }}
{{- else if include "ddc.toml.isTableArray" $v }}
{{- range $v }}

[[{{ $sub }}]]
{{- include "ddc.toml.table" (dict "table" . "path" $sub) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ddc.toml" -}}
# ddc node config, rendered by the ddc Helm chart from the release's values
# (checked by `ddc check-config` in the init container before the daemon starts).
{{- include "ddc.toml.table" (dict "table" (include "ddc.config" . | fromYaml) "path" "") }}
{{ end }}
