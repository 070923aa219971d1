/* log.h - process log lines on stderr: "2026-11-25T03:40:00.123Z INFO  node: text".
 * Programs log; library code returns struct mm_error and leaves logging to its caller,
 * except for background work (watch resumes, lease loss) that has no caller to return to. */
#ifndef MM_LOG_H
#define MM_LOG_H

enum mm_log_level { MM_LOG_DEBUG, MM_LOG_INFO, MM_LOG_WARN, MM_LOG_ERROR };

void mm_log_set_level(enum mm_log_level level);
/* Parse "debug|info|warn|error"; returns 0 or -EINVAL. */
int mm_log_parse_level(const char *s, enum mm_log_level *out);
void mm_log(enum mm_log_level level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
