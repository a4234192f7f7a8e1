{{- define "attnserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "attnserve.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Triton pods only (the edge's pods carry component: edge): Deployment, Services, PDB select these. */}}
{{- define "attnserve.tritonSelectorLabels" -}}
{{ include "attnserve.selectorLabels" . }}
app.kubernetes.io/component: triton
{{- end -}}

{{- define "attnserve.labels" -}}
{{ include "attnserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The args of values.triton.args (generated from attnserve.serving.flags), with the repository swapped for
     modelRepository.uri when the repository lives in object storage. */}}
{{- define "attnserve.tritonArgs" -}}
{{- range .Values.triton.args }}
{{- if and (hasPrefix "--model-repository=" .) $.Values.modelRepository.uri }}
- {{ printf "--model-repository=%s" $.Values.modelRepository.uri | quote }}
{{- else }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "attnserve.env" -}}
- name: ATTNSERVE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.adminTokenSecret.name }}
      key: {{ .Values.adminTokenSecret.key }}
{{- end -}}
