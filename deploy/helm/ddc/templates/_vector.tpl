{{/*
The Vector sidecar's pipeline: vector/vector.yaml of this repository, the vector role's
template rendered for a checkout (files/vector is a link to vector/, files/vrl to the
role's VRL programs; `helm package` copies both in), changed only where a pod differs
from a host:

  * ddc_journald goes: a pod has no journal (the ddc container logs to stderr instead,
    which `kubectl logs` shows), and the file sinks go with what only feeds them
    (ddc_file; forwarded_syslog and its transform and file): files in a pod die with it
    and nothing ages them out; ship logs with an optional sink (vector.sinks) instead;
  * addresses and paths are set here: the .vrl files sit in /etc/vector, the exporter
    listens on vector.prometheusPort, the sources on vector.syslogPort and
    vector.statsdPort of the loopback (the ddc config is rendered with the same ports);
  * optional sinks (vector/optional/NAME.yaml, rendered from the role's template with an
    endpoint placeholder) are added when vector.sinks.NAME.endpoint is set.

Rendering fails if the pipeline names a variable this template does not resolve.
Output: a dict {vector.yaml: TEXT, <name>.vrl: TEXT, ...}, the ConfigMap's data.
*/}}
{{- define "ddc.vector.files" -}}
{{- $p := include "ddc.paths" . | fromYaml }}
{{- $v := .Values.vector }}
{{- $cfg := .Files.Get "files/vector/vector.yaml" | fromYaml }}
{{- if not $cfg.sources }}{{ fail "files/vector/vector.yaml is missing or empty (deploy/helm/ddc/files/vector links to the repository's vector/)" }}{{ end }}
{{- range $name, $sink := $v.sinks }}
{{- if $sink.endpoint }}
{{- $file := printf "files/vector/optional/%s.yaml" $name }}
{{- $text := $.Files.Get $file }}
{{- if not $text }}{{ fail (printf "vector.sinks.%s: there is no vector/optional/%s.yaml" $name $name) }}{{ end }}
{{- $text = replace (printf "${DDC_%s_ENDPOINT}" (upper $name)) $sink.endpoint $text }}
{{- range $id, $c := (fromYaml $text).sinks }}{{ $_ := set $cfg.sinks $id $c }}{{ end }}
{{- end }}
{{- end }}
{{- $gone := list "ddc_journald" "ddc_file" "forwarded_syslog" "forwarded_syslog_parse" "forwarded_syslog_file" }}
{{- range $gone }}{{ $_ := unset $cfg.sources . }}{{ $_ := unset $cfg.transforms . }}{{ $_ := unset $cfg.sinks . }}{{ end }}
{{- $_ := set $cfg.sources.ddc_syslog "address" (printf "127.0.0.1:%v" $v.syslogPort) }}
{{- $_ := set $cfg.sources.ddc_statsd "address" (printf "127.0.0.1:%v" $v.statsdPort) }}
{{- $_ := set $cfg.sinks.prometheus "address" (printf "0.0.0.0:%v" $v.prometheusPort) }}
{{- $_ := set $cfg "data_dir" "/var/lib/vector" }}
{{- $files := dict }}
{{- range $kind := list "transforms" "sinks" }}
{{- range $id, $c := get $cfg $kind }}
{{- if $c.inputs }}{{ $_ := set $c "inputs" (without $c.inputs "ddc_journald") }}{{ end }}
{{- if $c.file }}
{{- $vrl := base $c.file }}
{{- $body := $.Files.Get (printf "files/vrl/%s" $vrl) }}
{{- if not $body }}{{ fail (printf "%s.%s names %s, which is not among the vector role's VRL programs (files/vrl)" $kind $id $vrl) }}{{ end }}
{{- $_ := set $files $vrl $body }}
{{- $_ := set $c "file" (printf "%s/%s" $p.vectorDir $vrl) }}
{{- end }}
{{- end }}
{{- end }}
{{- $yaml := toYaml $cfg }}
{{- if contains "${" $yaml }}
{{- fail (printf "vector/vector.yaml uses a variable the chart does not resolve (%s): map it in templates/_vector.tpl" (regexFind "\\$\\{[^}]*\\}" $yaml)) }}
{{- end }}
{{- $_ := set $files "vector.yaml" (printf "# The ddc pipeline (vector/vector.yaml) for a pod, rendered by the ddc Helm chart.\n%s" $yaml) }}
{{- toYaml $files }}
{{- end }}
