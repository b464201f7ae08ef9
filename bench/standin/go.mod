module campusbridge/bench/standin

go 1.26
