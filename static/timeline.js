// The demo page's SVG timeline (filled in by the next commit).
