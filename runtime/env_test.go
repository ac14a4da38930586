package runtime

import (
	"slices"
	"testing"
)

// TestExecEnv: the image's environment is the base, HOME follows the exec
// user, the request wins, and root's PATH never reaches into the agent's
// home (where the agent could plant a program).
func TestExecEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin:/bin:/home/agent/.local/bin", "LANG=C.UTF-8", "SANDBOX_ID=sbx-1"}
	agent := execEnv(base, UserAgent, []string{"FOO=1", "LANG=de_DE.UTF-8"})
	want := []string{"PATH=/usr/bin:/bin:/home/agent/.local/bin", "LANG=de_DE.UTF-8", "SANDBOX_ID=sbx-1", "HOME=/home/agent", "FOO=1"}
	if !slices.Equal(agent, want) {
		t.Errorf("agent env\n got %q\nwant %q", agent, want)
	}
	root := execEnv([]string{"PATH=/home/agent/bin:/usr/bin:.:/home/agent/.local/bin:/home/agentx/bin:/bin::"}, UserRoot, nil)
	if want := []string{"PATH=/usr/bin:/home/agentx/bin:/bin", "HOME=/root"}; !slices.Equal(root, want) {
		t.Errorf("root env\n got %q\nwant %q", root, want)
	}
	// A PATH the request sets is the caller's choice, also for root.
	root = execEnv(base, UserRoot, []string{"PATH=/home/agent/tools:/bin"})
	if !slices.Contains(root, "PATH=/home/agent/tools:/bin") {
		t.Errorf("request PATH replaced: %q", root)
	}
	// No PATH in the image: the default.
	if env := execEnv(nil, UserAgent, nil); !slices.Contains(env, "PATH="+defaultPath) {
		t.Errorf("no default PATH: %q", env)
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2"}, []string{"B=3", "C=4", "A=5"})
	if want := []string{"A=5", "B=3", "C=4"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
