// The demo page's admin console (filled in by the next commit).
