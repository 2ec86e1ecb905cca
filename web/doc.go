// Package web embeds the daemon's static assets: the admin page's CSS and
// JavaScript (static/admin/) and the demo chat page (static/index.html,
// chat.js, chat.css) that the client listener serves at / in the demo
// configuration.
//
// web imports nothing of the daemon.
package web
