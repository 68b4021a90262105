package agent

import (
	"context"
	"encoding/json"
	"time"

	"lxcfleet/codeupdate"
)

// refreshTimeout bounds the fetch of a refreshed update check.
const refreshTimeout = 30 * time.Second

// refreshUpdateCheck checks the last checked target again after a job that
// moved current (update-code, rollback), so that the console's update card,
// /v1/update-available and lxcfleet_update_available describe the new
// current rather than the one before the job ("1 commit behind" after the
// update to that commit; "up to date" after a rollback away from it). It
// does nothing before a first check.
func (a *Agent) refreshUpdateCheck(ctx context.Context, kind JobKind) {
	switch kind {
	case KindUpdate, KindRollback, KindRecover, KindStartAll, KindRestart:
		// Each may move current: a recovery finishes or undoes an
		// update, a start-all or restart on an unproven release may trip
		// and put current back.
	default:
		return
	}
	if a.deps.Code == nil {
		return
	}
	raw, err := a.LastUpdateCheck()
	if err != nil || raw == nil {
		return
	}
	var last codeupdate.UpdateInfo
	if json.Unmarshal(raw, &last) != nil || last.Target == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	info, err := a.deps.Code.CheckUpdate(ctx, last.Target)
	if err != nil {
		a.log.Warn("refreshing the update check after a job", "kind", kind, "target", last.Target, "err", err)
		return
	}
	b, err := json.Marshal(struct {
		codeupdate.UpdateInfo
		CheckedAt time.Time `json:"checked_at"`
	}{info, a.deps.Clock.Now()})
	if err != nil {
		return
	}
	if err := a.jr.SetMeta("last_update_check", string(b)); err != nil {
		a.log.Warn("recording the refreshed update check", "err", err)
	}
}
