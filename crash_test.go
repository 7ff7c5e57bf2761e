package webhook

// childEnv names the environment variable that makes the test binary run
// childMain instead of the tests: crash tests start the dispatcher in a
// child process and kill it.
const childEnv = "WEBHOOK_TEST_CHILD"

func childMain() int { return 2 }
