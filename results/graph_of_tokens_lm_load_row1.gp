set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_load_row1.png.tmp.20522'
$m << EOD
0.081665 0.119507 0.116455 0.113892 0.145752 0.113098 0.160645 0.148987
0.0880127 0.122498 0.145142 0.169922 0.154602 0.093811 0.100098 0.125916
EOD
set title "Similarity-Aware SMoE (ours: cosine τ=0.1): load (last\nepoch, first seed)"
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
