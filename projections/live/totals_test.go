package live

import (
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// TestTotalsAcrossDayAndMonth: running totals count a call in its own UTC
// day and month; a late call from a day already over does not count as
// today's; a day or month that has ended reads as zero.
func TestTotalsAcrossDayAndMonth(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	type call struct {
		at    string
		calls int64
		spend string
	}
	tests := []struct {
		name             string
		calls            []call
		now              string
		today, month     int64
		todaySp, monthSp string
	}{
		{"same day", []call{{"2026-03-10T09:00:00Z", 1, "0.80"}, {"2026-03-10T23:59:00Z", 2, "1.60"}}, "2026-03-10T23:59:30Z", 3, 3, "2.40", "2.40"},
		{"midnight starts a new day, same month", []call{{"2026-03-10T23:59:00Z", 1, "0.80"}, {"2026-03-11T00:00:00Z", 1, "1.00"}}, "2026-03-11T00:00:10Z", 1, 2, "1.00", "1.80"},
		{"no call yet today", []call{{"2026-03-10T12:00:00Z", 4, "4.00"}}, "2026-03-11T00:00:01Z", 0, 4, "0.00", "4.00"},
		{"late call from yesterday is not today's", []call{{"2026-03-11T00:00:05Z", 1, "1.00"}, {"2026-03-10T23:59:59Z", 1, "0.80"}}, "2026-03-11T00:00:10Z", 1, 2, "1.00", "1.80"},
		{"new month", []call{{"2026-03-31T23:59:00Z", 1, "0.80"}, {"2026-04-01T00:00:00Z", 1, "1.00"}}, "2026-04-01T00:01:00Z", 1, 1, "1.00", "1.00"},
		{"month over, nothing since", []call{{"2026-03-31T10:00:00Z", 2, "2.00"}}, "2026-04-01T00:00:00Z", 0, 0, "0.00", "0.00"},
		{"year end", []call{{"2026-12-31T23:59:59Z", 1, "0.80"}, {"2027-01-01T00:00:00Z", 1, "0.80"}}, "2027-01-01T00:00:01Z", 1, 1, "0.80", "0.80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tot totals
			for _, c := range tt.calls {
				tot.add(at(c.at), c.calls, decimal.RequireFromString(c.spend))
			}
			today, month := tot.at(at(tt.now))
			got := []any{today.Calls, decimal.Decimal(today.Spend).StringFixed(2), month.Calls, decimal.Decimal(month.Spend).StringFixed(2)}
			want := []any{tt.today, tt.todaySp, tt.month, tt.monthSp}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("got today %d/%s month %d/%s, want %d/%s %d/%s", got[0], got[1], got[2], got[3], want[0], want[1], want[2], want[3])
				}
			}
		})
	}
}
