/* Reports the signals a terminal or `kill` sends it: prints "ready", then a line for each
 * SIGWINCH, and on SIGINT or SIGTERM a line and exit status 3. It waits in pause(), and its
 * handlers write(2) at once, so what it prints follows what it was sent, with no race. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

static void on(int sig) {
    if (sig == SIGWINCH) {
        say("got SIGWINCH\n");
        return;
    }
    say(sig == SIGINT ? "got SIGINT\n" : "got SIGTERM\n");
    _exit(3);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on;
    sigaction(SIGWINCH, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    say("ready\n");
    for (;;)
        pause();
}
