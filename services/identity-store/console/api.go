package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// apiResult is one admin API answer: the envelope of docs/admin-api.md plus the HTTP status.
type apiResult struct {
	Status  int
	Success bool `json:"success"`
	Errors  []struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
	Result     json.RawMessage `json:"result"`
	ResultInfo struct {
		Page       int `json:"page"`
		PerPage    int `json:"per_page"`
		Count      int `json:"count"`
		TotalCount int `json:"total_count"`
	} `json:"result_info"`
}

// messages returns the API's error messages.
func (r apiResult) messages() []string {
	out := make([]string, 0, len(r.Errors))
	for _, e := range r.Errors {
		out = append(out, e.Message)
	}
	return out
}

// err is nil on success, else an error carrying every message.
func (r apiResult) err() error {
	if r.Success && r.Status < 300 {
		return nil
	}
	return &apiError{Status: r.Status, Messages: r.messages()}
}

// apiError is an admin API refusal, shown to the console user as the API worded it.
type apiError struct {
	Status   int
	Messages []string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("admin API %d: %s", e.Status, strings.Join(e.Messages, "; "))
}

// recorder is the minimal ResponseWriter an in-process admin API call writes into.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}

// call runs one admin API request in process, authenticated with the admin token. ctx is the console
// request's, so the request id (the correlation id of admin actions) is the console request's.
// The console never forwards the browser's own headers: its cookie does not authorise /api/*.
func (c *Console) call(ctx context.Context, method, path string, q url.Values, body any, out any) (apiResult, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{}, err
		}
		rd = bytes.NewReader(b)
	}
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return apiResult{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.b.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{header: http.Header{}}
	c.b.API.ServeHTTP(rec, req)
	res := apiResult{Status: rec.status}
	if err := json.Unmarshal(rec.body.Bytes(), &res); err != nil {
		return res, fmt.Errorf("admin API %s %s: %d, undecodable answer: %w", method, path, rec.status, err)
	}
	res.Status = rec.status
	if out != nil && res.Success && len(res.Result) > 0 {
		if err := json.Unmarshal(res.Result, out); err != nil {
			return res, fmt.Errorf("admin API %s %s: decode result: %w", method, path, err)
		}
	}
	return res, nil
}

// get calls a read endpoint and turns a refusal into an error.
func (c *Console) get(ctx context.Context, path string, q url.Values, out any) (apiResult, error) {
	res, err := c.call(ctx, http.MethodGet, path, q, nil, out)
	if err != nil {
		return res, err
	}
	return res, res.err()
}
