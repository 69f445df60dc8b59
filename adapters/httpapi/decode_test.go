package httpapi

import (
	"net/http"
	"testing"
)

func TestDecodeRefusesAmbiguousAndBrokenBodies(t *testing.T) {
	topUp := bodyRoute{method: "POST", new: func() body { return &topUpBody{} }}
	key := bodyRoute{method: "POST", new: func() body { return &createKeyBody{} }}
	task := bodyRoute{method: "POST", new: func() body { return &taskBody{} }}
	plans := bodyRoute{method: "PUT", new: func() body { return &planBody{} }}
	tests := []struct {
		name        string
		route       bodyRoute
		contentType string
		body        string
		status      int
		field       string // for 422
	}{
		{"duplicate key", topUp, "application/json", `{"amount":"10.00","amount":"1000.00","reference":"r"}`, 422, "amount"},
		{"duplicate key in another case", topUp, "application/json", `{"amount":"10.00","AMOUNT":"1000.00","reference":"r"}`, 422, "AMOUNT"},
		// encoding/json matches the Kelvin sign to k: max_\u212aeys sets max_keys.
		{"duplicate key by the Kelvin sign", plans, "application/json", `{"api_access":true,"max_keys":1,"max_\u212aeys":1000}`, 422, "max_\u212aeys"},
		{"duplicate nested key", key, "application/json", `{"name":"a","monthly_quota":{"spend":"1.00","Spend":"9.00"}}`, 422, "monthly_quota.Spend"},
		{"duplicate key deep in passthrough input", task, "application/json", `{"input":{"prompt":"x","style":[{"a":1,"a":2}]}}`, 422, "input.style[0].a"},
		{"same key in sibling objects", task, "application/json", `{"input":{"prompt":"x","a":{"k":1},"b":{"k":2}}}`, 0, ""},
		{"duplicate then broken", topUp, "application/json", `{"amount":"1","amount":"2"`, 400, ""},
		{"trailing garbage", topUp, "application/json", `{"amount":"10.00","reference":"r"} x`, 400, ""},
		{"two objects", topUp, "application/json", `{"amount":"10.00","reference":"r"}{}`, 400, ""},
		{"NaN number", topUp, "application/json", `{"amount":NaN,"reference":"r"}`, 400, ""},
		{"wrong content type", topUp, "text/plain", `{"amount":"10.00","reference":"r"}`, 400, ""},
		{"form content type", topUp, "application/x-www-form-urlencoded", `amount=10.00&reference=r`, 400, ""},
		{"no content type", topUp, "", `{"amount":"10.00","reference":"r"}`, 0, ""},
		{"json with charset", topUp, "application/json; charset=utf-8", `{"amount":"10.00","reference":"r"}`, 0, ""},
		{"vendor json type", topUp, "application/vnd.api+json", `{"amount":"10.00","reference":"r"}`, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeFuzzed(tt.route, tt.contentType, []byte(tt.body))
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("got %v, want accepted", err)
				}
				return
			}
			ae, _ := toAPIError(err)
			if err == nil || ae.Status != tt.status {
				t.Fatalf("got %v, want %d", err, tt.status)
			}
			if tt.status == http.StatusUnprocessableEntity && (len(ae.Details) != 1 || ae.Details[0].Field != tt.field) {
				t.Fatalf("got details %+v, want one for %s", ae.Details, tt.field)
			}
		})
	}
}
