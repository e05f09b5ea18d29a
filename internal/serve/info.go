package serve

import "net/http"

// modelList is GET /v1/models' answer.
type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

type modelObject struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Created     int64  `json:"created"`
	OwnedBy     string `json:"owned_by"`
	Fingerprint string `json:"fingerprint"`
	NCtx        int    `json:"context_length"`
}

// handleModels serves GET /v1/models: the served model.
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: []modelObject{{
		ID: s.info.Name, Object: "model", Created: s.started.Unix(), OwnedBy: "probe",
		Fingerprint: s.info.Fingerprint, NCtx: s.info.NCtx,
	}}})
}

// handleProbes serves GET /v1/probes: the loaded probes and the refused files.
func (s *Server) handleProbes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.probes.Load().describe())
}

type healthResponse struct {
	Status string `json:"status"`
	Slots  *int   `json:"slots,omitempty"`
	Busy   *int   `json:"busy,omitempty"`
	Queued *int   `json:"queued,omitempty"`
}

// handleHealth serves GET /health: 200 with the engine's load when ready, else 503.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, healthResponse{Status: "loading"})
		return
	}
	busy, slots, queued := s.eng.Load()
	writeJSON(w, http.StatusOK, healthResponse{Status: "ok", Slots: &slots, Busy: &busy, Queued: &queued})
}
