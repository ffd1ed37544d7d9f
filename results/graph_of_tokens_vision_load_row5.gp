set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_load_row5.png.tmp.25775'
$m << EOD
0.129642 0.149839 0.0934743 0.123667 0.115119 0.138856 0.149609 0.0997932
0.138189 0.129251 0.100506 0.123598 0.117716 0.116544 0.14506 0.129136
EOD
set title "Attention-Aware, aggregation ablated (p = r): load (last\nepoch, first seed)"
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
