package relay

import (
	"encoding/json"
	"strings"
	"sync"

	"github.com/tailgate-dev/tailgate/gateway/relay/jsonrpc"
)

// A task belongs to the caller whose call created it, on every path: a
// session of the session era, a sessionless request, a stdio child or a
// remote target. A remote server keeps every caller's tasks in one place
// (each session's link reaches the same server), so that a task is its
// creator's is tailgate's to enforce: tasks/get, tasks/result,
// tasks/update and tasks/cancel of a task the caller did not create are
// refused as for one that does not exist, tasks/list shows the caller's
// own, and a listen hears of the caller's own tasks only. The owner is the
// caller (OpenParams.Caller: its tailnet node), not the session, so that a
// caller's next session, or its sessionless children started again, still
// reach its tasks on a remote target.

// maxTasksPerCaller bounds the tasks remembered for one caller; past it,
// its oldest is forgotten (and refused as unknown from then on).
const maxTasksPerCaller = 1024

// taskKey names a task: where its id is unique (a remote target, which
// every link to it shares, or one stdio child), and its id there.
type taskKey struct {
	c      *child // nil for a remote target
	target string
	id     string
}

// taskKeyOf is the key of the task c's target calls id.
func taskKeyOf(c *child, id string) taskKey {
	if c.target.Remote != nil {
		return taskKey{target: c.target.Name, id: id}
	}
	return taskKey{c: c, id: id}
}

// taskOwners records who created each task of a backend's targets.
type taskOwners struct {
	mu       sync.Mutex
	owner    map[taskKey]string
	byCaller map[string][]taskKey // oldest first
}

// note records that caller created task k; a task id a server gives
// again (after the first expired) is the newest creator's.
func (o *taskOwners) note(caller string, k taskKey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owner == nil {
		o.owner = make(map[taskKey]string)
		o.byCaller = make(map[string][]taskKey)
	}
	if prev, ok := o.owner[k]; ok && prev == caller {
		return
	}
	o.owner[k] = caller
	keys := append(o.byCaller[caller], k)
	for len(keys) > maxTasksPerCaller {
		if o.owner[keys[0]] == caller {
			delete(o.owner, keys[0])
		}
		keys = keys[1:]
	}
	o.byCaller[caller] = keys
}

func (o *taskOwners) owns(caller string, k taskKey) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	owner, ok := o.owner[k]
	return ok && owner == caller
}

// forgetChild drops the tasks of a stdio child that is gone.
func (o *taskOwners) forgetChild(caller string, c *child) {
	o.mu.Lock()
	defer o.mu.Unlock()
	keys, ok := o.byCaller[caller]
	if !ok {
		return
	}
	kept := keys[:0]
	for _, k := range keys {
		if k.c == c {
			if o.owner[k] == caller {
				delete(o.owner, k)
			}
			continue
		}
		kept = append(kept, k)
	}
	if len(kept) == 0 {
		delete(o.byCaller, caller)
		return
	}
	o.byCaller[caller] = kept
}

// noteTask records the task a tools/call result of c creates, if any
// (resultType "task", or the session era's {"task":{"taskId":…}}), as the
// session's caller's.
func (s *Session) noteTask(c *child, m *jsonrpc.Message) {
	id := m.Path("result", "taskId")
	if !id.Has() || m.String(m.Path("result", "resultType")) != "task" {
		if id = m.Path("result", "task", "taskId"); !id.Has() {
			return
		}
	}
	s.b.tasks.note(s.caller, taskKeyOf(c, m.String(id)))
}

// ownsTask reports whether the task id of c was created by the session's
// caller.
func (s *Session) ownsTask(c *child, id string) bool {
	return s.b.tasks.owns(s.caller, taskKeyOf(c, id))
}

// createsTask reports whether a tools/call may create a task: its client
// declared the tasks extension, or (the session era's tasks) it asks for
// one in params.task.
func createsTask(m *jsonrpc.Message) bool {
	return declaresTasks(m) || m.Path("params", "task").Has()
}

// ownTasksList is a tasks/list result of c with the tasks the session's
// caller did not create left out, the others' ids as the client knows
// them.
func (s *Session) ownTasksList(c *child, res *jsonrpc.Message, frontID []byte) []byte {
	var result map[string]json.RawMessage
	var tasks []json.RawMessage
	if !res.Result.Has() || json.Unmarshal(res.Bytes(res.Result), &result) != nil || json.Unmarshal(result["tasks"], &tasks) != nil {
		return res.Replace(res.ID, frontID)
	}
	own := []json.RawMessage{}
	for _, task := range tasks {
		tm := &jsonrpc.Message{Raw: task}
		sp := tm.Field(jsonrpc.Span{Start: 0, End: len(task)}, "taskId")
		if !sp.Has() || !s.ownsTask(c, tm.String(sp)) {
			continue
		}
		if s.prefixed {
			task = tm.Replace(sp, jsonrpc.Quote(c.target.Name+nameSep+tm.String(sp)))
		}
		own = append(own, task)
	}
	result["tasks"], _ = json.Marshal(own)
	b, _ := json.Marshal(result)
	return jsonrpc.ResultMessage(frontID, b)
}

// ownListenTaskIDs are the task ids a listen names for child c: those of
// c's tasks the session's caller created, as c knows them (without their
// prefix). ok is false when the listen names none.
func (s *Session) ownListenTaskIDs(c *child, params map[string]json.RawMessage) (ids []string, ok bool) {
	var notes map[string]json.RawMessage
	if json.Unmarshal(params["notifications"], &notes) != nil || notes["taskIds"] == nil {
		return nil, false
	}
	var asked []string
	json.Unmarshal(notes["taskIds"], &asked)
	ids = []string{}
	for _, id := range asked {
		if s.prefixed {
			rest, found := strings.CutPrefix(id, c.target.Name+nameSep)
			if !found {
				continue
			}
			id = rest
		}
		if s.ownsTask(c, id) {
			ids = append(ids, id)
		}
	}
	return ids, true
}

// withListenTaskIDs is params with the listen's task ids replaced by ids.
func withListenTaskIDs(params map[string]json.RawMessage, ids []string) map[string]json.RawMessage {
	var notes map[string]json.RawMessage
	json.Unmarshal(params["notifications"], &notes)
	if notes == nil {
		notes = map[string]json.RawMessage{}
	}
	out := make(map[string]json.RawMessage, len(params))
	for k, v := range params {
		out[k] = v
	}
	notes["taskIds"], _ = json.Marshal(ids)
	out["notifications"], _ = json.Marshal(notes)
	return out
}
