{{/* The image, pinned by tag (the chart's appVersion unless set). */}}
{{- define "ferrolb.image" -}}
image: {{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) | quote }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{/*
Helm's bookkeeping labels, on every object's metadata only: selectors and Pod
templates keep the plain app.kubernetes.io/name labels of config/default, so a
release and a kubectl apply -k install select the same Pods.
*/}}
{{- define "ferrolb.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* nodeSelector, tolerations and annotations of one component's Pods. */}}
{{- define "ferrolb.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
