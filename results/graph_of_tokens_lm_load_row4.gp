set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_load_row4.png.tmp.20522'
$m << EOD
0.175049 0.119995 0.193176 0.0963745 0.105469 0.116394 0.0647583 0.128784
0.112976 0.0557861 0.22467 0.190918 0.153015 0.132996 0.0466919 0.0829468
EOD
set title "Attention-Aware SMoE (ours: relative σ=3): load (last\nepoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
