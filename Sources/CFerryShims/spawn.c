// posix_spawn of a detached process: POSIX_SPAWN_SETSID and posix_spawn_file_actions_addclosefrom_np
// are GNU extensions that Swift's Glibc module does not import.
#define _GNU_SOURCE
#include "CFerryShims.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>

int ferry_spawn_detached(const char *path, char *const argv[], char *const envp[], const char *log_path,
                         int32_t *pid_out) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int result = posix_spawn_file_actions_init(&actions);
    if (result != 0) return -result;
    result = posix_spawnattr_init(&attributes);
    if (result != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return -result;
    }
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if ((result = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)) == 0 &&
        (result = posix_spawn_file_actions_addopen(&actions, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0600)) == 0 &&
        (result = posix_spawn_file_actions_adddup2(&actions, 1, 2)) == 0 &&
        (result = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) == 0 &&
        (result = posix_spawnattr_setsigmask(&attributes, &none)) == 0 &&
        (result = posix_spawnattr_setsigdefault(&attributes, &all)) == 0 &&
        (result = posix_spawnattr_setflags(&attributes,
                                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) == 0) {
        pid_t pid = 0;
        result = posix_spawn(&pid, path, &actions, &attributes, argv, envp);
        if (result == 0) *pid_out = pid;
    }
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    return -result;
}
